// Runs the page's parsers, key map and terminal screen without a DOM and prints what they
// did as JSON, for TestScriptLogic. Usage: node logic.js app.js
"use strict";
const vm = require("vm"), fs = require("fs");
const ctx = vm.createContext({ document: { addEventListener() {} }, TextDecoder, TextEncoder });
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), ctx);
// Lexical declarations of the page (functions, classes) are visible to later scripts in the
// same context.
ctx.probe = function (splitArgv, parseBytes, parsePairs, Screen, keyBytes) {
  const r = {};
  const tryArgv = (s) => { try { return splitArgv(s); } catch (e) { return "ERR " + e.message; } };
  r.argv = [
    tryArgv("ls -l  /workspace"),
    tryArgv(String.raw`echo 'a  b' "c \"d\" \\ e" f\ g`),
    tryArgv("sh -c 'echo $HOME | wc -c'"),
    tryArgv("''"),
    tryArgv("unterminated 'quote"),
  ];
  r.bytes = [parseBytes("512m"), parseBytes("1g"), parseBytes("1024"), parseBytes("1.5k")];
  r.pairs = parsePairs("A=1\n\nB=x=y\r\n", "env");
  Screen.prototype.render = function () {};
  const s = new Screen({});
  const w = (str) => s.write(new TextEncoder().encode(str));
  w("$ \x1b[1;32mls\x1b[0m\r\nfile1  file2\r\n$ ech");
  w("x\b \bo hi\r\nhi\r\n");
  w("$ abc\b\b\x1b[K");
  w("\x1b]0;title\x07!");
  r.lines = s.lines.slice();
  r.col = s.col;
  w("\x1b[2J\x1b[H");
  r.cleared = s.lines.slice();
  r.keys = [
    keyBytes({ key: "Enter" }), keyBytes({ key: "c", ctrlKey: true }), keyBytes({ key: "d", ctrlKey: true }),
    keyBytes({ key: "ArrowUp" }), keyBytes({ key: "x" }), keyBytes({ key: "Shift" }),
  ];
  return JSON.stringify(r);
};
process.stdout.write(vm.runInContext("probe(splitArgv, parseBytes, parsePairs, Screen, keyBytes)", ctx));
