// Vendoring shared by the player's and the dashboard's build.mjs: copies pinned npm packages' browser builds out
// of node_modules (installed from the folder's package-lock.json by `npm ci`) into the folder's static/, byte for
// byte, and records each file's package, version and sha256 in static/vendor.json, which the tests check against
// the committed files and the lockfile (tests/vendored.py).
import { createHash } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";

// folder: URL of the bundle's folder (ending in "/"); vendored: name in static/ -> [npm package, path inside it]
export function vendor(folder, vendored) {
  const here = (path) => new URL(path, folder);
  const lock = JSON.parse(readFileSync(here("package-lock.json"), "utf8"));
  const files = {};
  for (const [name, [pkg, path]] of Object.entries(vendored)) {
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
  console.log(`vendored ${Object.keys(files).length} files into ${new URL("static/", folder).pathname}`);
}
