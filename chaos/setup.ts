/** What the runner sets up before the faults: its own PostgreSQL server, the commit gate, the topics. */
import { Admin } from '@platformatic/kafka'
import { freePorts, OwnPostgres } from './faults.ts'
import { log, outbox, pgDir, schema, state, topicNames } from './state.ts'

/** The delivered topics, as declared (partitions, the orders topic's low limit); never `missing`. */
export async function createTopics(brokers: string[]): Promise<void> {
  const report = await outbox.ensureTopics({ kafka: { brokers } })
  const created = report.created.map((c) => c.topic).sort()
  if (JSON.stringify(created) !== JSON.stringify([topicNames.orders, topicNames.payments].sort())) {
    throw new Error(`ensureTopics created ${JSON.stringify(report)}`)
  }
}

/** Whether the broker has the topic nobody should have created. */
export async function topicExists(brokers: string[], topic: string): Promise<boolean> {
  const kafkaAdmin = new Admin({ clientId: 'k-entity-chaos', bootstrapBrokers: brokers })
  try {
    return (await kafkaAdmin.listTopics()).includes(topic)
  } finally {
    await kafkaAdmin.close()
  }
}

/**
 * The run's own server, and the deferred trigger that can hold the business table's COMMITs
 * (`before-commit-record` restarts): when the gate is set, a COMMIT waits in the trigger, before
 * its commit record exists, until the gate expires or the server is gone.
 */
export async function startOwnPostgres(): Promise<void> {
  const [port] = await freePorts(1)
  state.ownPg = new OwnPostgres(pgDir, port as number)
  const begin = Date.now()
  await state.ownPg.init()
  await state.ownPg.start()
  state.databaseUrl = state.ownPg.url
  state.runnerConnection = { ...state.runnerConnection, connectionString: state.databaseUrl }
  log(
    `own PostgreSQL 15 at 127.0.0.1:${port} (fsync on, data in ${state.ownPg.dataDir}), ready in ${Date.now() - begin} ms`,
  )
}

export async function createCommitGate(): Promise<void> {
  await state.admin.query(`
    CREATE TABLE "${schema}".chaos_commit_gate (until timestamptz);
    INSERT INTO "${schema}".chaos_commit_gate VALUES (NULL);
    CREATE FUNCTION "${schema}".chaos_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      until timestamptz := (SELECT g.until FROM "${schema}".chaos_commit_gate g);
    BEGIN
      IF until IS NOT NULL AND clock_timestamp() < until THEN
        PERFORM pg_sleep(extract(epoch FROM until - clock_timestamp()));
      END IF;
      RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER chaos_commit_gate AFTER INSERT ON "${schema}".business
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".chaos_commit_gate();
  `)
}
