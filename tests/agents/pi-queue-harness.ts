// Loads atm's pi extension ($ATM_EXTENSION) outside pi with a stand-in for pi's API, fires $EVENTS
// tool_execution_start events while nothing listens on $ATM_PI_SOCKET, then listens there and prints
// what arrived as one JSON line. Run by tests/tests/real_pi.rs with the jiti of the installed pi.
import * as net from "node:net";
const path = process.env.ATM_PI_SOCKET!;
const mod = await import(process.env.ATM_EXTENSION!);
const handlers: Record<string, Function> = {};
mod.default({ on: (n: string, f: Function) => { handlers[n] = f; } });
const ctx = { sessionManager: { getSessionId: () => "s1", getEntries: () => [] }, cwd: "/w", model: { id: "m" },
  isIdle: () => false, getContextUsage: () => undefined, ui: {} };
const n = Number(process.env.EVENTS ?? "300");
for (let i = 0; i < n; i++) handlers["tool_execution_start"]({ toolCallId: `t${i}`, toolName: "bash", args: { command: "x" } }, ctx);
const lines: string[] = [];
const server = net.createServer((c) => { c.setEncoding("utf8"); let buf = ""; c.on("data", (d) => { buf += d; const parts = buf.split("\n"); buf = parts.pop()!; lines.push(...parts); }); });
server.listen(path);
const until = Date.now() + 5000;
while (Date.now() < until && lines.filter((l) => l.includes("pi_event")).length < Math.min(n, 256)) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 100));
const events = lines.filter((l) => l.includes("pi_event")).map((l) => JSON.parse(l).data.payload.toolCallId);
console.log(JSON.stringify({ connect: lines.filter((l) => l.includes('"connect"')).length, count: events.length, first: events[0], last: events[events.length - 1] }));
process.exit(0);
