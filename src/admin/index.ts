/** `k-entity/admin`: the admin part of an outbox table for operators' tools, without topics. */
export { type AdminDatabase, type AdminOptions, createAdmin, databaseOfUrl } from './create.ts'
export { DEFAULT_COUNT_CAP } from './figures.ts'
export type { OutboxAdmin, OutboxStatus, RelayNodeStatus, StatusOptions, TopicStatus } from './types.ts'
