import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrate } from '../../src/outbox/migrate.js';

/** The shared Postgres every test uses; tests isolate themselves in a schema of their own. */
export const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestSchema {
  name: string;
  /** A connection string whose sessions use only this schema (`search_path`). */
  databaseUrl: string;
  pool: pg.Pool;
  /** Drops the schema and everything in it. */
  drop(): Promise<void>;
}

/** Creates a schema with the migrations applied, for one test (or one file). */
export async function createTestSchema(name = 'test'): Promise<TestSchema> {
  const schema = `rh_${name}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  const url = new URL(DATABASE_URL);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const databaseUrl = url.toString();
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  const client = await pool.connect();
  try {
    await migrate(client);
  } finally {
    client.release();
  }
  return {
    name: schema,
    databaseUrl,
    pool,
    drop: async () => {
      await pool.end();
      const dropper = new pg.Client({ connectionString: DATABASE_URL });
      await dropper.connect();
      await dropper.query(`DROP SCHEMA ${schema} CASCADE`);
      await dropper.end();
    },
  };
}
