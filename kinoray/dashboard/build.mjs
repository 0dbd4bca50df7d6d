// Copies the pinned charting library's browser build (uPlot) out of node_modules (installed from
// package-lock.json by `npm ci`) into static/, byte for byte, and records each file's package, version and
// sha256 in static/vendor.json. `make dashboard` runs it; tests/test_dashboard.py checks the committed files
// against that record and the lockfile. kinoray's own files in static/ are written by hand, not by this script.
import { createHash } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";

const here = (path) => new URL(path, import.meta.url);

// name in static/ -> [npm package, path inside the package]
const VENDORED = {
  "uPlot.iife.min.js": ["uplot", "dist/uPlot.iife.min.js"],
  "uPlot.min.css": ["uplot", "dist/uPlot.min.css"],
  "uPlot.LICENSE.txt": ["uplot", "LICENSE"],
};

const lock = JSON.parse(readFileSync(here("package-lock.json"), "utf8"));
const files = {};
for (const [name, [pkg, path]] of Object.entries(VENDORED)) {
  const installed = JSON.parse(readFileSync(here(`node_modules/${pkg}/package.json`), "utf8")).version;
  const locked = lock.packages[`node_modules/${pkg}`].version;
  if (installed !== locked) {
    throw new Error(`${pkg} ${installed} is installed but the lockfile pins ${locked}: run npm ci`);
  }
  copyFileSync(here(`node_modules/${pkg}/${path}`), here(`static/${name}`));
  const sha256 = createHash("sha256").update(readFileSync(here(`static/${name}`))).digest("hex");
  files[name] = { package: pkg, version: locked, path, sha256 };
}
writeFileSync(here("static/vendor.json"), JSON.stringify({ files }, null, 2) + "\n");
console.log(`vendored ${Object.keys(files).length} files into static/`);
