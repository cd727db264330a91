// KRaft storage: formatted once per data dir, with the cluster id every node of a cluster shares.
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { brokerError, describeExecError, execFileAsync, javaBinary } from './common.ts'
import { type Layout, scramArguments } from './config.ts'
import { jvmArgs } from './jvm.ts'

/** Kafka's Uuid: 16 random bytes, base64url; ids whose text starts with '-' are rejected by its CLI. */
export function randomClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url')
    if (!id.startsWith('-')) return id
  }
}

async function readClusterId(l: Layout): Promise<string | undefined> {
  const metaFile = join(l.logDir, 'meta.properties')
  if (!existsSync(metaFile)) return undefined
  return /^cluster\.id=(.+)$/m.exec(await readFile(metaFile, 'utf8'))?.[1]?.trim()
}

/** Formats the KRaft storage unless an earlier run did, and returns the cluster id stored there. */
export async function formatStorage(jarsDir: string, l: Layout, cluster?: { id: string }): Promise<string> {
  const existing = await readClusterId(l)
  if (existing) return existing
  try {
    await execFileAsync(
      javaBinary(),
      [
        ...jvmArgs(jarsDir, l),
        'kafka.tools.StorageTool',
        'format',
        '-t',
        cluster?.id ?? randomClusterId(),
        '-c',
        l.properties,
        // A cluster names its controller in controller.quorum.voters, with which --standalone is refused.
        ...(cluster === undefined ? ['--standalone'] : []),
        '--ignore-formatted',
        ...scramArguments(l.saslSsl),
      ],
      { cwd: l.dataDir },
    )
  } catch (error) {
    throw brokerError(`Formatting Kafka storage in ${l.logDir} failed: ${describeExecError(error)}`)
  }
  const formatted = await readClusterId(l)
  if (!formatted)
    throw brokerError(`Kafka's StorageTool ran but wrote no cluster.id to ${l.logDir}/meta.properties`)
  return formatted
}
