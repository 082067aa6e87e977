import { CodedError } from '../core/errors.js';

/** Codes of the recurring-capsule work (runner/schedule). */
export type ScheduleErrorCode =
  /** The cron expression is not one croner reads (five or six fields). */
  | 'SCHEDULE_CRON_INVALID'
  /** The time zone is not an IANA name this runtime knows. */
  | 'SCHEDULE_TIMEZONE_INVALID'
  /** The kept capsule file of an accepted schedule is missing or is not the file that was accepted. */
  | 'SCHEDULE_CAPSULE_UNAVAILABLE';

export class ScheduleError extends CodedError<ScheduleErrorCode> {}
