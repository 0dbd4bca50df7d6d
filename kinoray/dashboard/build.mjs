// The dashboard's charting library (uPlot), vendored into static/ by `make dashboard` the way the player's
// builds are (../player/vendor.mjs); tests/test_dashboard.py checks the committed files against
// static/vendor.json and the lockfile. kinoray's own files in static/ are written by hand, not by this script.
import { vendor } from "../player/vendor.mjs";

vendor(new URL(".", import.meta.url), {
  "uPlot.iife.min.js": ["uplot", "dist/uPlot.iife.min.js"],
  "uPlot.min.css": ["uplot", "dist/uPlot.min.css"],
  "uPlot.LICENSE.txt": ["uplot", "LICENSE"],
});
