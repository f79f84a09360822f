// Runs SQL over a Perfetto trace with Perfetto's trace processor (WebAssembly), offline.
// Usage: node query.mjs <assets_dir> <trace> "<sql>" ["<sql>" ...]
// Prints one JSON object per query: {"sql", "columns", "rows"} or {"sql", "error"}.
// Exit status 1 if any query failed.
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import {pathToFileURL} from 'node:url';

const [assets, tracePath, ...queries] = process.argv.slice(2);
const {EngineBase} = await import(pathToFileURL(path.join(assets, 'engine.mjs')).href);

// The emscripten glue expects a worker scope and a fetchable wasm: give it the bytes.
globalThis.self = globalThis;
globalThis.WorkerGlobalScope = function WorkerGlobalScope() {};
Object.defineProperty(globalThis, 'location', {
  value: {href: pathToFileURL(assets).href + '/'}, writable: true, configurable: true});
globalThis.__rrrWasm = new Uint8Array(fs.readFileSync(path.join(assets, 'trace_processor.wasm')));

let bundle = fs.readFileSync(path.join(assets, 'engine_bundle.node.js'), 'utf8');
const patches = [
  ['this.useMemory64 = hasMemory64Support();', 'this.useMemory64 = false;'],
  ['locateFile: (s) => s,', 'locateFile: (s) => s, wasmBinary: globalThis.__rrrWasm,'],
  ['const wasmBridge = new wasm_bridge_1.WasmBridge();',
   'const wasmBridge = new wasm_bridge_1.WasmBridge(); globalThis.__rrrBridge = wasmBridge;'],
];
for (const [from, to] of patches) {
  if (!bundle.includes(from)) throw new Error(`trace processor bundle changed: '${from}' not found`);
  bundle = bundle.replace(from, to);
}
vm.runInThisContext(bundle, {filename: 'engine_bundle.node.js'});

class NodeEngine extends EngineBase {
  mode = 'WASM';
  id = 'rrr-node';
  constructor(port) {
    super();
    this.port = port;
    port.onmessage = (m) => this.onRpcResponseBytes(m.data);
  }
  rpcSendRequestBytes(data) { this.port.postMessage(data); }
}

const channel = new MessageChannel();
globalThis.__rrrBridge.initialize(channel.port1);
const engine = new NodeEngine(channel.port2);
await new Promise((r) => setTimeout(r, 1000));

const bytes = new Uint8Array(fs.readFileSync(tracePath));
const CHUNK = 32 * 1024 * 1024;
for (let off = 0; off < bytes.length; off += CHUNK) {
  await engine.parse(bytes.subarray(off, off + CHUNK));
}
await engine.notifyEof();

for (const sql of queries) {
  const res = await engine.query(sql);
  if (res.error()) {
    console.log(JSON.stringify({sql, error: res.error()}));
    process.exitCode = 1;
    continue;
  }
  const columns = res.columns();
  const rows = [];
  for (const it = res.iter({}); it.valid(); it.next()) {
    rows.push(columns.map((c) => {
      const v = it.get(c);
      if (typeof v !== 'bigint') return v;
      return (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)) ? Number(v) : v.toString();
    }));
  }
  console.log(JSON.stringify({sql, columns, rows}));
}
channel.port1.close();
channel.port2.close();
process.exit(process.exitCode ?? 0);
