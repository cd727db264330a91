/**
 * `k-entity/dashboard`: a live web page over an `OutboxAdmin` (backlog, throughput and lag charts,
 * relay nodes, dead letters with replay and purge). No authentication of its own.
 */
export type { DashboardHandler, DashboardOptions } from './handler.ts'
export { DASHBOARD_HEADER, dashboardHandler } from './handler.ts'
export type { DashboardServer, StartDashboardOptions } from './server.ts'
export { startDashboard } from './server.ts'
