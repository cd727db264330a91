import { adminFor, target } from '../database.ts'
import { print, printJson } from '../output.ts'
import { CONNECTION_HELP, CONNECTION_OPTIONS, parse } from '../usage.ts'

export const MIGRATE_HELP = `Usage: k-entity migrate [--print] [connection options]

Creates or upgrades the outbox tables (safe to run from several places at once).
  --print          print the SQL instead of running it, for your own migration tool

${CONNECTION_HELP}`

export async function migrate(args: string[]): Promise<number> {
  const { values } = parse('migrate', args, { ...CONNECTION_OPTIONS, print: { type: 'boolean' } })
  if (values.help) {
    print(MIGRATE_HELP)
    return 0
  }
  const t = target(values)
  const admin = adminFor(t)
  try {
    if (values.print) {
      const sql = admin.migrationSql()
      if (values.json) printJson({ database: admin.database, sql })
      else print(sql)
      return 0
    }
    const result = await admin.migrate()
    if (values.json) printJson({ database: admin.database, where: t.where, ...result })
    else {
      print(
        result.applied.length === 0
          ? `${admin.database} at ${t.where}: already at schema version ${result.current}, nothing to do`
          : `${admin.database} at ${t.where}: applied migration${result.applied.length > 1 ? 's' : ''} ${result.applied.join(', ')}; schema version ${result.current}`,
      )
    }
    return 0
  } finally {
    await admin.close()
  }
}
