/**
 * Reason codes of the coordinator link (runner/protocol/): request signatures (RFC 9421), the witness
 * (C2SP tlog-witness), and the shape of every body that crosses the link. Each code has one plain sentence
 * (PROTOCOL_ERROR_SENTENCES); the coordinator answers `{code, message}` with them, the agent classifies by
 * them. Stable: the coordinator, the agent and docs/protocol.md all name them.
 */
import { CodedError } from '../core/errors.js';

export type ProtocolErrorCode =
  // RFC 9421 request signatures
  | 'PROTOCOL_SIGNATURE_MISSING'
  | 'PROTOCOL_SIGNATURE_MALFORMED'
  | 'PROTOCOL_SIGNATURE_INVALID'
  | 'PROTOCOL_PARAMETER_MISSING'
  | 'PROTOCOL_ALGORITHM'
  | 'PROTOCOL_COMPONENT_MISSING'
  | 'PROTOCOL_UNKNOWN_KEY'
  | 'PROTOCOL_KEY_ROLE'
  | 'PROTOCOL_CREATED_FUTURE'
  | 'PROTOCOL_EXPIRED'
  | 'PROTOCOL_TTL_TOO_LONG'
  | 'PROTOCOL_RUNNER_MISMATCH'
  | 'PROTOCOL_NONCE_REPLAYED'
  // RFC 9530 Content-Digest
  | 'PROTOCOL_DIGEST_MISSING'
  | 'PROTOCOL_DIGEST_MALFORMED'
  | 'PROTOCOL_DIGEST_MISMATCH'
  // bodies (wire.ts)
  | 'PROTOCOL_BODY_TOO_LARGE'
  | 'PROTOCOL_BODY_UNPARSEABLE'
  | 'PROTOCOL_BODY_SCHEMA'
  // C2SP tlog-witness (witness.ts)
  | 'WITNESS_BODY_MALFORMED'
  | 'WITNESS_UNKNOWN_LOG'
  | 'WITNESS_BAD_SIGNATURE'
  | 'WITNESS_OLD_SIZE_TOO_LARGE'
  | 'WITNESS_EMPTY_ROOT'
  | 'WITNESS_PROOF_AT_ZERO'
  | 'WITNESS_CONSISTENCY'
  | 'WITNESS_ROOT_CONFLICT'
  | 'WITNESS_COSIGNATURE_MALFORMED';

export const PROTOCOL_ERROR_SENTENCES: Readonly<Record<ProtocolErrorCode, string>> = {
  PROTOCOL_SIGNATURE_MISSING: 'The request carries no Signature and Signature-Input headers.',
  PROTOCOL_SIGNATURE_MALFORMED: 'The Signature or Signature-Input header is not well formed.',
  PROTOCOL_SIGNATURE_INVALID: 'The request signature does not verify with the named key.',
  PROTOCOL_PARAMETER_MISSING: 'The request signature lacks one of created, expires, nonce, keyid or alg.',
  PROTOCOL_ALGORITHM: 'The request signature algorithm is not ed25519.',
  PROTOCOL_COMPONENT_MISSING: 'The request signature does not cover a component it must cover.',
  PROTOCOL_UNKNOWN_KEY: 'The request is signed by a key the trust document does not list.',
  PROTOCOL_KEY_ROLE: 'The request is signed by a key that is not enrolled under the runner role.',
  PROTOCOL_CREATED_FUTURE: 'The request signature was created too far in the future.',
  PROTOCOL_EXPIRED: 'The request signature has expired.',
  PROTOCOL_TTL_TOO_LONG: 'The request signature is valid for longer than allowed.',
  PROTOCOL_RUNNER_MISMATCH: 'The runner in the path is not the runner that signed the request.',
  PROTOCOL_NONCE_REPLAYED: 'The request signature nonce was seen before.',
  PROTOCOL_DIGEST_MISSING: 'The request has a body but no Content-Digest header.',
  PROTOCOL_DIGEST_MALFORMED: 'The Content-Digest header is not one sha-256 digest.',
  PROTOCOL_DIGEST_MISMATCH: 'The Content-Digest header does not match the body.',
  PROTOCOL_BODY_TOO_LARGE: 'The body is larger than its cap.',
  PROTOCOL_BODY_UNPARSEABLE: 'The body is not valid JSON.',
  PROTOCOL_BODY_SCHEMA: 'The body does not match its schema.',
  WITNESS_BODY_MALFORMED: 'The add-checkpoint body is not well formed.',
  WITNESS_UNKNOWN_LOG: 'The checkpoint names a log this witness does not know.',
  WITNESS_BAD_SIGNATURE: 'The checkpoint carries no valid signature by the log key.',
  WITNESS_OLD_SIZE_TOO_LARGE: 'The old size is larger than the checkpoint size.',
  WITNESS_EMPTY_ROOT: 'The checkpoint of an empty tree does not have the empty root.',
  WITNESS_PROOF_AT_ZERO: 'A consistency proof from size zero must be empty.',
  WITNESS_CONSISTENCY: 'The consistency proof does not link the witnessed checkpoint to this one.',
  WITNESS_ROOT_CONFLICT: 'The checkpoint has the witnessed size but another root hash.',
  WITNESS_COSIGNATURE_MALFORMED: 'The cosignature lines are not well formed.',
};

export class ProtocolError extends CodedError<ProtocolErrorCode> {
  constructor(code: ProtocolErrorCode, message?: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(code, message ?? PROTOCOL_ERROR_SENTENCES[code], details, options);
  }
}
