// CPU time of the services a run shares the machine with (PostgreSQL's processes, the Kafka
// broker's JVM), read from /proc. On a small machine the relay's database work competes with the
// relay itself for the same cores, so a fair reading of "relay vs raw producer" needs the whole
// machine's CPU per message, not only the measured process's.
import { readdirSync, readFileSync } from 'node:fs'

export interface ServiceCpu {
  /** Every `postgres` process: the backends serving the run, WAL writer, checkpointer. */
  postgresS: number
  /** Every `java` process: the Kafka broker (the only JVM the bench starts). */
  brokerS: number
}

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat; 100 on every Linux architecture Node supports. */
const TICKS_PER_SECOND = 100

/** Cumulative CPU seconds of the services now; undefined where /proc is not readable (not Linux). */
export function serviceCpu(): ServiceCpu | undefined {
  let pids: string[]
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name))
  } catch {
    return undefined
  }
  const total: ServiceCpu = { postgresS: 0, brokerS: 0 }
  for (const pid of pids) {
    let stat: string
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    } catch {
      continue // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    const close = stat.lastIndexOf(')')
    const comm = stat.slice(stat.indexOf('(') + 1, close)
    const fields = stat.slice(close + 2).split(' ')
    const seconds = (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
    if (comm === 'postgres') total.postgresS += seconds
    else if (comm === 'java') total.brokerS += seconds
  }
  return total
}

/** CPU seconds the services used since `start` (undefined if either reading is). */
export function serviceCpuSince(start: ServiceCpu | undefined): ServiceCpu | undefined {
  const now = serviceCpu()
  if (start === undefined || now === undefined) return undefined
  return { postgresS: now.postgresS - start.postgresS, brokerS: now.brokerS - start.brokerS }
}
