/**
 * The HTTP plumbing of the coordinator, on node:http directly: a router of about fifteen routes, capped body
 * reads, and `{code, message}` error answers. No framework: the routes are few and fixed, and the two things
 * that matter most here (refusing an oversized body from its Content-Length before reading a byte, and cutting
 * a stream that passes its cap) are plain on the raw request and hidden behind body parsers in frameworks.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isCodedError } from '../../runner/core/errors.js';
import { formatErrorBody } from '../../runner/protocol/wire.js';
import { HttpError } from './errors.js';

export interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Named groups of the route's pattern, percent-decoded. */
  params: Record<string, string>;
  query: URLSearchParams;
  /** The request path and query exactly as received (for the signature's @target-uri). */
  rawTarget: string;
}

export type Handler = (ctx: RouteContext) => Promise<void>;

interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
}

export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: RegExp, handler: Handler): this {
    this.routes.push({ method, pattern, handler });
    return this;
  }

  /** Finds the route: 404 when no pattern matches the path, 405 (with Allow) when none has this method. */
  resolve(method: string, path: string): { handler: Handler; params: Record<string, string> } {
    const allowed: string[] = [];
    for (const route of this.routes) {
      const match = route.pattern.exec(path);
      if (!match) continue;
      if (route.method !== method) {
        allowed.push(route.method);
        continue;
      }
      const params: Record<string, string> = {};
      for (const [name, value] of Object.entries(match.groups ?? {})) params[name] = decodeSegment(value);
      return { handler: route.handler, params };
    }
    if (allowed.length > 0) {
      throw new HttpError(405, 'PROTOCOL_METHOD_NOT_ALLOWED', `This resource does not answer ${printableMethod(method)}.`, {
        allow: [...new Set(allowed)].join(', '),
      });
    }
    throw new HttpError(404, 'PROTOCOL_NOT_FOUND', 'There is no such resource.');
  }
}

function decodeSegment(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new HttpError(404, 'PROTOCOL_NOT_FOUND', 'There is no such resource.');
  }
}

function printableMethod(method: string): string {
  return /^[A-Z]{1,16}$/.test(method) ? method : 'this method';
}

/**
 * Reads a body of at most `cap` bytes. A Content-Length over the cap is refused before a byte is read; a body
 * that grows past the cap as it streams is cut there (the connection is closed after the 413), so no request
 * holds more than `cap` bytes of this process's memory.
 */
export async function readBody(req: IncomingMessage, cap: number): Promise<Buffer> {
  refuseOversized(req, cap);
  const tooLarge = () => new HttpError(413, 'PROTOCOL_BODY_TOO_LARGE', `The body is larger than its cap of ${cap} bytes.`, { connection: 'close' });
  // A client that asked first (Expect: 100-continue) is told to send only now, once the route wants the body
  // and its declared length is under the cap; a refused one gets the 413 without having sent a byte.
  awaitingContinue.get(req)?.();
  awaitingContinue.delete(req);
  const chunks: Buffer[] = [];
  let total = 0;
  return new Promise<Buffer>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      total += chunk.length;
      if (total > cap) {
        cleanup();
        chunks.length = 0;
        // Stop reading: nothing more of this request is kept; the answer closes the connection.
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks, total));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onAborted = () => {
      cleanup();
      reject(new HttpError(400, 'PROTOCOL_BODY_TOO_LARGE', 'The request ended before its body did.'));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

/** A Content-Length over the cap is refused (413) before anything else is done for the request. */
export function refuseOversized(req: IncomingMessage, cap: number): void {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > cap) {
    throw new HttpError(413, 'PROTOCOL_BODY_TOO_LARGE', `The body is larger than its cap of ${cap} bytes.`, { connection: 'close' });
  }
}

/** What a body read reserves of the budget: its declared length, or its whole cap when it is chunked. */
export function bodyReservation(req: IncomingMessage, cap: number): number {
  const declared = Number(req.headers['content-length']);
  return Number.isSafeInteger(declared) && declared >= 0 ? Math.min(declared, cap) : cap;
}

/**
 * Bounds the request bodies the coordinator holds at once: bytes over all reads (each reserves what
 * bodyReservation says before it reads a byte) and reads per runner, so that neither many runners nor one
 * hostile runner with many connections can make it buffer more. A read that does not fit is refused at once
 * (503 with Retry-After): the runner's outbox retries it, nothing is lost.
 */
export class BodyReads {
  private bytes = 0;
  private readonly perRunner = new Map<string, number>();

  constructor(
    readonly maxBytes: number,
    readonly maxPerRunner: number,
  ) {}

  /** Reserves `bytes` for one read of `runner`'s; returns the release (call it once), or undefined when full. */
  tryAcquire(runner: string, bytes: number): (() => void) | undefined {
    const reads = this.perRunner.get(runner) ?? 0;
    if (reads >= this.maxPerRunner || this.bytes + bytes > this.maxBytes) return undefined;
    this.bytes += bytes;
    this.perRunner.set(runner, reads + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.bytes -= bytes;
      const left = (this.perRunner.get(runner) ?? 1) - 1;
      if (left === 0) this.perRunner.delete(runner);
      else this.perRunner.set(runner, left);
    };
  }

  get inFlightBytes(): number {
    return this.bytes;
  }
}

/** Requests whose client waits for `100 Continue` before sending its body (see readBody). */
export const awaitingContinue = new WeakMap<IncomingMessage, () => void>();

/** Reads and discards nothing: a request that should have no body is refused if it declares one. */
export function refuseBody(req: IncomingMessage): void {
  const length = req.headers['content-length'];
  if ((length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined) {
    throw new HttpError(413, 'PROTOCOL_BODY_TOO_LARGE', 'This request takes no body.', { connection: 'close' });
  }
}

export function send(
  res: ServerResponse,
  status: number,
  body: Uint8Array | string,
  contentType: string,
  headers: Record<string, string> = {},
): void {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, { 'content-type': contentType, 'content-length': String(bytes.length), 'cache-control': 'no-store', ...headers });
  res.end(bytes);
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, `${JSON.stringify(value)}\n`, 'application/json');
}

export function sendBytes(res: ServerResponse, status: number, bytes: Uint8Array, contentType = 'application/json'): void {
  send(res, status, bytes, contentType);
}

export function sendEmpty(res: ServerResponse, status: 204): void {
  res.writeHead(status, { 'cache-control': 'no-store' });
  res.end();
}

/** An error body within CAPS.errorBodyBytes and the error body schema (message at most 1,024 characters). */
export function errorBytes(code: string, message: string): Buffer {
  const text = message.length > 1000 ? `${message.slice(0, 1000)}...` : message;
  try {
    return formatErrorBody({ code, message: text.length > 0 ? text : 'The request was refused.' });
  } catch {
    return formatErrorBody({ code: 'COORDINATOR_INTERNAL', message: 'The coordinator failed to answer this request.' });
  }
}

/** SQLite's primary result codes (the low byte of an extended code). */
const SQLITE_BUSY = 5;
const SQLITE_LOCKED = 6;
const SQLITE_FULL = 13;

/** A node:sqlite error that says the disk is full (507) or the database busy (503), else undefined. */
function storageFault(err: unknown): { status: number; code: string; message: string } | undefined {
  const e = err as { code?: unknown; errcode?: unknown } | null;
  if (typeof e !== 'object' || e === null || e.code !== 'ERR_SQLITE_ERROR' || typeof e.errcode !== 'number') return undefined;
  const primary = e.errcode & 0xff;
  if (primary === SQLITE_FULL) return { status: 507, code: 'COORDINATOR_STORAGE_FULL', message: "The coordinator's disk is full; try again later." };
  if (primary === SQLITE_BUSY || primary === SQLITE_LOCKED) {
    return { status: 503, code: 'COORDINATOR_BUSY', message: "The coordinator's database is busy; try again shortly." };
  }
  return undefined;
}

/**
 * The answer for anything a handler throws: an HttpError as itself; a coded error of a pure module as 422 with
 * its own code (the document was understood and refused); anything else 500 with no detail (logged instead).
 */
export function sendError(res: ServerResponse, err: unknown, onInternal: (err: unknown) => void): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  let status: number;
  let code: string;
  let message: string;
  let headers: Record<string, string> = {};
  if (err instanceof HttpError) {
    ({ status, code, message } = err);
    headers = { ...err.headers };
  } else if (storageFault(err) !== undefined) {
    // The database is full or locked: nothing was stored (its transaction rolled back), and a retry later
    // succeeds, so the answer is a 5xx with Retry-After that the runner's outbox retries.
    onInternal(err);
    ({ status, code, message } = storageFault(err)!);
    headers = { 'retry-after': status === 507 ? '60' : '1' };
  } else if (isCodedError(err)) {
    status = 422;
    code = err.code;
    message = err.message;
  } else {
    onInternal(err);
    status = 500;
    code = 'COORDINATOR_INTERNAL';
    message = 'The coordinator failed to answer this request.';
  }
  // A body the route did not read (refused before it, e.g. a signature that does not verify) is not drained
  // either: the connection is closed, so an unauthenticated client cannot stream into it.
  if (!res.req.complete) headers.connection = 'close';
  send(res, status, errorBytes(code, message), 'application/json', headers);
}
