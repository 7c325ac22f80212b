// atm's pi extension: tells atmd what this pi is doing (installed by `atmctl setup pi`).
//
// pi (@mariozechner/pi-coding-agent) loads this file from ~/.pi/agent/extensions/ (or
// $PI_CODING_AGENT_DIR/extensions/) with no build step. It keeps one connection to atmd's ingest
// socket and sends, per pi event atm uses, one protocol-v1 line
//   {"protocol_version":{"major":1,"minor":0},"type":"pi_event",
//    "data":{"event","payload","session_id","pid","tmux_pane","cwd"}}
// which atm's pi adapter (adapters/pi) translates. Payloads are cut down to what atm reads (no
// tool output, no message content), so a line stays far below atmd's 1 MiB limit.
//
// The socket: $ATM_PI_SOCKET, else $ATM_HOOKS_SOCKET (atm-hook's override), else
// $XDG_RUNTIME_DIR/atm/hooks.sock, else /tmp/atm-$UID/hooks.sock (atm's runtime-dir rule).
//
// It never blocks or breaks pi: sends are fire-and-forget, every handler swallows its own
// errors, and while atmd is down messages wait in a bounded queue (MAX_QUEUED lines; when full
// the oldest is dropped: every line carries the session's identity and the newest lines carry
// its current state) while the connection is retried with backoff (RETRY_MIN_MS doubling to
// RETRY_MAX_MS). After a reconnect the session's start, state and usage are sent again, so an
// atmd that restarted knows the session at once. Only `session_shutdown` at exit waits, at most
// SHUTDOWN_FLUSH_MS, for its last line to reach the socket.
//
// Written against pi 0.73.1. Type annotations are loose on purpose: the file must load even
// when pi's types move.

import * as net from "node:net";

const MAX_QUEUED = 256;
const MAX_UNSENT_BYTES = 1 << 20;
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 10_000;
const SHUTDOWN_FLUSH_MS = 500;
const TEXT_LIMIT = 2000;
/** Tool input fields worth showing (the command, the path...), as atm's translator reads them. */
const INPUT_FIELDS = ["command", "path", "file_path", "url", "pattern", "query"];

type Ctx = any;
type Json = Record<string, unknown>;

/** Events that set the session's state: the last one is sent again after a reconnect. */
const STATE_EVENTS = new Set([
	"atm_idle",
	"before_agent_start",
	"agent_start",
	"agent_end",
	"tool_execution_start",
	"tool_execution_end",
	"atm_needs_input_open",
	"atm_needs_input_resolved",
	"session_before_compact",
]);

function socketPath(): string {
	const env = process.env;
	for (const v of [env.ATM_PI_SOCKET, env.ATM_HOOKS_SOCKET]) {
		if (v && v.startsWith("/")) return v;
	}
	const runtime = env.XDG_RUNTIME_DIR;
	if (runtime && runtime.startsWith("/")) return `${runtime}/atm/hooks.sock`;
	const uid = typeof process.getuid === "function" ? process.getuid() : 0;
	return `/tmp/atm-${uid}/hooks.sock`;
}

function cut(s: unknown, limit = TEXT_LIMIT): string | undefined {
	if (typeof s !== "string") return undefined;
	return s.length > limit ? s.slice(0, limit) : s;
}

/** The fields of a tool's input atm shows, each cut short; the rest (file contents) is left out. */
function inputPreview(input: unknown): Json {
	const out: Json = {};
	if (input && typeof input === "object") {
		for (const k of INPUT_FIELDS) {
			const v = cut((input as Json)[k]);
			if (v !== undefined) out[k] = v;
		}
	}
	return out;
}

function modelOf(model: any): Json | undefined {
	if (!model || typeof model !== "object" || typeof model.id !== "string") return undefined;
	return { id: model.id, name: model.name, provider: model.provider };
}

/** The one connection of this pi process to atmd, shared by every extension instance pi
 * creates (pi makes a new one per session on /new, /resume and /fork). */
class Link {
	private socket: net.Socket | undefined;
	private connected = false;
	private queue: string[] = [];
	private retryMs = RETRY_MIN_MS;
	private timer: ReturnType<typeof setTimeout> | undefined;
	private everConnected = false;
	private closed = false;
	dropped = 0;
	/** Sent again after a reconnect: the session's start, its state and its usage. */
	lastStart: string | undefined;
	lastState: string | undefined;
	lastUsage: string | undefined;

	send(line: string, event: string): void {
		if (event === "session_start") this.lastStart = line;
		else if (event === "atm_usage") this.lastUsage = line;
		else if (STATE_EVENTS.has(event)) this.lastState = line;
		if (this.closed) return;
		if (this.connected && this.socket) {
			this.write(line);
			return;
		}
		this.enqueue(line);
		this.connect();
	}

	private enqueue(line: string): void {
		this.queue.push(line);
		while (this.queue.length > MAX_QUEUED) {
			this.queue.shift();
			this.dropped++;
		}
	}

	private write(line: string, done?: () => void): void {
		const s = this.socket;
		if (!s) return;
		// atmd reads what it is sent; a socket that stopped draining is not fed without bound.
		if (s.writableLength > MAX_UNSENT_BYTES) {
			this.dropped++;
			done?.();
			return;
		}
		s.write(line + "\n", () => done?.());
	}

	connect(): void {
		if (this.socket || this.timer || this.closed) return;
		let s: net.Socket;
		try {
			s = net.createConnection({ path: socketPath() });
		} catch {
			this.retry();
			return;
		}
		this.socket = s;
		s.unref(); // never keep pi alive for atm's sake
		s.setEncoding("utf8");
		s.on("connect", () => {
			this.connected = true;
			this.retryMs = RETRY_MIN_MS;
			const client = `pi-atm-${process.pid}`;
			s.write(JSON.stringify({ protocol_version: { major: 1, minor: 0 }, type: "connect", client_id: client }) + "\n");
			const pending = this.queue;
			this.queue = [];
			const resend: string[] = [];
			if (this.everConnected) {
				// atmd may have restarted and know nothing of this session.
				for (const l of [this.lastStart, this.lastState, this.lastUsage]) {
					if (l && !pending.includes(l)) resend.push(l);
				}
			}
			this.everConnected = true;
			for (const l of [...resend, ...pending]) this.write(l);
		});
		// Replies (connected, pong, error) are read and dropped: atm answers nothing we need.
		s.on("data", () => {});
		s.on("error", () => {});
		s.on("close", () => {
			this.connected = false;
			this.socket = undefined;
			this.retry();
		});
	}

	private retry(): void {
		if (this.timer || this.closed) return;
		const wait = this.retryMs;
		this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
		this.timer = setTimeout(() => {
			this.timer = undefined;
			this.connect();
		}, wait);
		this.timer.unref?.();
	}

	/** Sends `line` and waits (at most SHUTDOWN_FLUSH_MS) until it is handed to the socket;
	 * then the link stays closed: pi is exiting. */
	async finalSend(line: string): Promise<void> {
		await new Promise<void>((resolve) => {
			const timer = setTimeout(resolve, SHUTDOWN_FLUSH_MS);
			timer.unref?.();
			const finish = () => {
				clearTimeout(timer);
				resolve();
			};
			if (this.connected && this.socket) this.write(line, finish);
			else {
				// Try now rather than at the next backoff step: pi exits after this.
				if (this.timer) clearTimeout(this.timer);
				this.timer = undefined;
				this.enqueue(line);
				this.connect();
				this.socket?.once("connect", () => setImmediate(finish));
			}
		});
		this.closed = true;
		if (this.timer) clearTimeout(this.timer);
		this.socket?.end();
	}
}

const LINK_KEY = Symbol.for("atm.pi.link");

function link(): Link {
	const g = globalThis as any;
	if (!g[LINK_KEY]) g[LINK_KEY] = new Link();
	return g[LINK_KEY] as Link;
}

export default function atm(pi: any) {
	/** Tool calls started and not yet ended, newest last: a dialog opened meanwhile gates one. */
	const inFlight: { id: string; name: string; input: Json }[] = [];
	/** Dialogs open now (an extension may open one while another is open), newest last. */
	const dialogs: Json[] = [];
	let lastUsageKey = "";

	function envelope(event: string, payload: Json, ctx: Ctx): string {
		const data: Json = { event, payload, pid: process.pid };
		try {
			data.session_id = ctx.sessionManager.getSessionId();
		} catch {}
		try {
			data.cwd = ctx.cwd;
		} catch {}
		if (process.env.TMUX_PANE) data.tmux_pane = process.env.TMUX_PANE;
		return JSON.stringify({ protocol_version: { major: 1, minor: 0 }, type: "pi_event", data });
	}

	function send(event: string, payload: Json, ctx: Ctx): void {
		try {
			link().send(envelope(event, payload, ctx), event);
		} catch {}
	}

	function idle(ctx: Ctx): boolean {
		try {
			return ctx.isIdle() === true;
		} catch {
			return false;
		}
	}

	/** The session's totals as pi's footer counts them (every assistant message in the session
	 * file, all branches), with the current context use. Sent when they changed. */
	function sendUsage(ctx: Ctx): void {
		try {
			const u = { cost: 0, input: 0, output: 0, cacheRead: 0, cacheWrite: 0 };
			for (const e of ctx.sessionManager.getEntries()) {
				const m = e?.type === "message" ? e.message : undefined;
				if (m?.role !== "assistant" || !m.usage) continue;
				u.cost += Number(m.usage.cost?.total) || 0;
				u.input += Number(m.usage.input) || 0;
				u.output += Number(m.usage.output) || 0;
				u.cacheRead += Number(m.usage.cacheRead) || 0;
				u.cacheWrite += Number(m.usage.cacheWrite) || 0;
			}
			let context: Json | undefined;
			try {
				const c = ctx.getContextUsage();
				if (c) context = { tokens: c.tokens, contextWindow: c.contextWindow, percent: c.percent };
			} catch {}
			const payload: Json = { session: u, context, model: modelOf(ctx.model) };
			const key = JSON.stringify(payload);
			if (key === lastUsageKey) return;
			lastUsageKey = key;
			send("atm_usage", payload, ctx);
		} catch {}
	}

	function dialogOpened(kind: string, title: unknown, message: unknown, ctx: Ctx): Json {
		const d: Json = { dialog: kind, title: cut(title), message: cut(message) };
		const tool = inFlight[inFlight.length - 1];
		if (tool) {
			d.toolName = tool.name;
			d.toolCallId = tool.id;
			d.input = tool.input;
		}
		dialogs.push(d);
		send("atm_needs_input_open", d, ctx);
		return d;
	}

	function dialogClosed(d: Json, ctx: Ctx): void {
		const i = dialogs.indexOf(d);
		if (i >= 0) dialogs.splice(i, 1);
		const still = dialogs[dialogs.length - 1];
		if (still) send("atm_needs_input_open", still, ctx);
		else send("atm_needs_input_resolved", { dialog: d.dialog, idle: idle(ctx) }, ctx);
	}

	/** Wraps the dialog methods of pi's UI context (shared by every extension of this session),
	 * so a dialog any extension opens is seen while it is open. Idempotent. */
	function watchDialogs(ctx: Ctx): void {
		let ui: any;
		try {
			ui = ctx.ui;
		} catch {
			return;
		}
		if (!ui || ui[LINK_KEY]) return;
		for (const kind of ["confirm", "select", "input", "editor"]) {
			const original = ui[kind];
			if (typeof original !== "function") continue;
			ui[kind] = function (this: unknown, ...args: unknown[]) {
				let d: Json | undefined;
				try {
					const message = kind === "confirm" ? args[1] : undefined;
					d = dialogOpened(kind, args[0], message, ctx);
				} catch {}
				const closed = () => {
					try {
						if (d) dialogClosed(d, ctx);
					} catch {}
				};
				let result: any;
				try {
					result = original.apply(this, args);
				} catch (e) {
					closed();
					throw e;
				}
				if (result && typeof result.then === "function") {
					return result.then(
						(v: unknown) => {
							closed();
							return v;
						},
						(e: unknown) => {
							closed();
							throw e;
						},
					);
				}
				closed();
				return result;
			};
		}
		try {
			Object.defineProperty(ui, LINK_KEY, { value: true });
		} catch {}
	}

	pi.on("session_start", (event: any, ctx: Ctx) => {
		watchDialogs(ctx);
		send(
			"session_start",
			{ reason: event?.reason, previousSessionFile: cut(event?.previousSessionFile), model: modelOf(ctx.model) },
			ctx,
		);
		sendUsage(ctx);
		// pi waits at its prompt now.
		if (idle(ctx)) send("atm_idle", { after: "session_start" }, ctx);
	});

	pi.on("before_agent_start", (event: any, ctx: Ctx) => {
		watchDialogs(ctx);
		send("before_agent_start", { prompt: cut(event?.prompt) }, ctx);
	});

	pi.on("tool_execution_start", (event: any, ctx: Ctx) => {
		const input = inputPreview(event?.args);
		inFlight.push({ id: String(event?.toolCallId ?? ""), name: String(event?.toolName ?? "tool"), input });
		send("tool_execution_start", { toolCallId: event?.toolCallId, toolName: event?.toolName, args: input }, ctx);
	});

	pi.on("tool_execution_end", (event: any, ctx: Ctx) => {
		const i = inFlight.findIndex((t) => t.id === String(event?.toolCallId ?? ""));
		if (i >= 0) inFlight.splice(i, 1);
		send("tool_execution_end", { toolCallId: event?.toolCallId, toolName: event?.toolName, isError: event?.isError === true }, ctx);
	});

	pi.on("turn_end", (_event: any, ctx: Ctx) => sendUsage(ctx));

	pi.on("agent_end", (event: any, ctx: Ctx) => {
		inFlight.length = 0;
		sendUsage(ctx);
		const messages = Array.isArray(event?.messages) ? event.messages : [];
		const last = [...messages].reverse().find((m: any) => m?.role === "assistant");
		send(
			"agent_end",
			{ stopReason: last?.stopReason, errorMessage: cut(last?.errorMessage), messageCount: messages.length },
			ctx,
		);
	});

	pi.on("session_before_compact", (_event: any, ctx: Ctx) => send("session_before_compact", {}, ctx));

	pi.on("session_compact", (_event: any, ctx: Ctx) => {
		send("session_compact", {}, ctx);
		sendUsage(ctx);
		// A /compact typed at the prompt: pi waits at its prompt again.
		if (idle(ctx)) send("atm_idle", { after: "session_compact" }, ctx);
	});

	pi.on("model_select", (event: any, ctx: Ctx) => {
		send("model_select", { model: modelOf(event?.model), source: event?.source }, ctx);
	});

	pi.on("session_shutdown", async (event: any, ctx: Ctx) => {
		const reason = typeof event?.reason === "string" ? event.reason : "quit";
		const line = envelope("session_shutdown", { reason }, ctx);
		try {
			if (reason === "quit") await link().finalSend(line);
			else link().send(line, "session_shutdown");
		} catch {}
	});
}
