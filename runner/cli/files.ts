import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/**
 * Reads at most `capBytes + 1` bytes of an untrusted file: enough for the parser's own size check to see
 * that it is over its cap (and say so with its code) without a huge file ever being held in memory.
 * Returns the bytes read and the file's size on disk.
 */
export function readFileCapped(path: string, capBytes: number): { bytes: Buffer; size: number } {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const buffer = Buffer.alloc(Math.min(size, capBytes + 1));
    let read = 0;
    while (read < buffer.length) {
      const n = readSync(fd, buffer, read, buffer.length - read, read);
      if (n === 0) break;
      read += n;
    }
    return { bytes: buffer.subarray(0, read), size };
  } finally {
    closeSync(fd);
  }
}
