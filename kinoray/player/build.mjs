// The players' browser builds (hls.js, dash.js), vendored into static/ by `make player` (see vendor.mjs);
// tests/test_player.py checks the committed files against static/vendor.json and the lockfile. kinoray's own
// files in static/ are written by hand, not by this script.
import { vendor } from "./vendor.mjs";

vendor(new URL(".", import.meta.url), {
  "hls.min.js": ["hls.js", "dist/hls.min.js"],
  "hls.js.LICENSE.txt": ["hls.js", "LICENSE"],
  "dash.all.min.js": ["dashjs", "dist/modern/umd/dash.all.min.js"],
  "dash.all.min.js.LICENSE.txt": ["dashjs", "dist/modern/umd/dash.all.min.js.LICENSE.txt"],
  "dashjs.LICENSE.txt": ["dashjs", "LICENSE.md"],
});
