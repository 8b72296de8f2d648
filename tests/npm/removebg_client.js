// remove.bg's npm client (remove.bg 1.3.0), unchanged but for its one endpoint constant, which is
// pointed at the server under test. Usage: node removebg_client.js ENDPOINT KEY file|base64|url INPUT OUT [SIZE]
// Prints the client's resolved result, or {"rejected": ...} with what it rejected with, as JSON.
"use strict";
const fs = require("fs");
const Module = require("module");
const path = require("path");

const [endpoint, apiKey, kind, input, outputFile, size] = process.argv.slice(2);
const file = require.resolve("remove.bg", { paths: [__dirname] });
const source = fs.readFileSync(file, "utf8");
const constant = 'const API_ENDPOINT = "https://api.remove.bg/v1.0/removebg";';
if (!source.includes(constant)) throw new Error("remove.bg's endpoint constant has changed");
const client = new Module(file, module);
client.filename = file;
client.paths = Module._nodeModulePaths(path.dirname(file));
client._compile(source.replace(constant, `const API_ENDPOINT = ${JSON.stringify(endpoint)};`), file);
const removebg = client.exports;

const options = { apiKey, outputFile, size: size || undefined };
const call = {
  file: () => removebg.removeBackgroundFromImageFile({ ...options, path: input }),
  base64: () => removebg.removeBackgroundFromImageBase64({ ...options, base64img: fs.readFileSync(input).toString("base64") }),
  url: () => removebg.removeBackgroundFromImageUrl({ ...options, url: input }),
}[kind];
call().then(
  (result) => console.log(JSON.stringify({ ...result, base64img: result.base64img.length })),
  (rejected) => console.log(JSON.stringify({ rejected })),
);
