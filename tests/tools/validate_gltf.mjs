// Print the Khronos glTF validator's JSON report for each file given (one JSON document per
// file, as a JSON list). Exit status: 0 when the reports were printed (whatever they say),
// 2 on a usage error or when the validator could not read a file.
//
//   node tests/tools/validate_gltf.mjs FILE.glb [FILE.gltf ...]
//
// The validator is the npm package gltf-validator, pinned in package.json (`make install`).
import { readFile } from "node:fs/promises";
import path from "node:path";
import validator from "gltf-validator";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate_gltf.mjs FILE.glb [FILE ...]");
  process.exit(2);
}

const reports = [];
for (const file of files) {
  try {
    const bytes = new Uint8Array(await readFile(file));
    const report = await validator.validateBytes(bytes, {
      uri: path.basename(file),
      maxIssues: 100,
      externalResourceFunction: (uri) =>
        readFile(path.resolve(path.dirname(file), decodeURIComponent(uri))).then(
          (data) => new Uint8Array(data)),
    });
    reports.push(report);
  } catch (error) {
    console.error(`${file}: ${error}`);
    process.exit(2);
  }
}
console.log(JSON.stringify(reports, null, 1));
