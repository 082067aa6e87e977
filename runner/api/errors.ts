/**
 * Codes of the runner's HTTP client (runner/api/client.ts): what went wrong on the way to the coordinator,
 * before or instead of an answer. Each is retryable (runner/outbox/classify.ts): the network, a proxy or a
 * coordinator that is down today is up tomorrow; a refusal by the coordinator has its own code instead.
 */
import { CodedError } from '../core/errors.js';

export type ApiErrorCode =
  /** The connection failed or closed before the whole answer came (refused, reset, DNS). */
  | 'API_NETWORK'
  /** Connecting, the headers or the body took longer than the configured bound. */
  | 'API_TIMEOUT'
  /** The TLS handshake failed: the coordinator's certificate does not chain to the configured CA, or a name mismatch. */
  | 'API_TLS'
  /** The proxy refused the tunnel or could not be reached. */
  | 'API_PROXY'
  /** The proxy asked for credentials (407) that the proxy URL did not carry or it did not accept. */
  | 'API_PROXY_AUTH'
  /** The request was aborted by the agent itself (it is stopping). */
  | 'API_ABORTED'
  /** A response body was larger than its cap (runner/protocol/wire.ts CAPS); reading stopped at the cap. */
  | 'PROTOCOL_RESPONSE_TOO_LARGE'
  /** A 2xx answer whose body is not what the endpoint answers (an HTML page from a proxy, a wrong capsule). */
  | 'API_UNEXPECTED_BODY'
  /** A configured CA file cannot be read. */
  | 'API_CA_FILE';

export class ApiError extends CodedError<ApiErrorCode> {}
