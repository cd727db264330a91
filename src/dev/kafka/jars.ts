// The broker's classpath, fetched from Maven Central once per pom.
import { existsSync } from 'node:fs'
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import {
  brokerError,
  describeExecError,
  execFileAsync,
  KAFKA_VERSION,
  log,
  POM,
  REPO_ROOT,
} from './common.ts'

/**
 * Returns the folder holding the broker's classpath, running Maven only when the folder is
 * missing or was filled from a different pom (the marker holds the pom's text).
 */
export async function ensureJars(quiet: boolean | undefined): Promise<string> {
  const jarsDir = join(REPO_ROOT, '.kafka', `jars-${KAFKA_VERSION}`)
  const marker = join(jarsDir, '.complete')
  const pom = await readFile(POM, 'utf8')
  const isComplete = async () => existsSync(marker) && (await readFile(marker, 'utf8')) === pom
  if (await isComplete()) return jarsDir

  log(quiet, `fetching Kafka ${KAFKA_VERSION} jars with Maven into ${relative(REPO_ROOT, jarsDir)}/`)
  const started = Date.now()
  // Copy into a private folder and rename it into place, so a concurrent start (a test run
  // beside `npm run kafka start`) never sees a half-filled classpath.
  const staging = `${jarsDir}.tmp-${process.pid}`
  await rm(staging, { recursive: true, force: true })
  try {
    await execFileAsync(
      'mvn',
      [
        '-B',
        '-q',
        '-f',
        POM,
        'dependency:copy-dependencies',
        '-DincludeScope=runtime',
        `-DoutputDirectory=${staging}`,
      ],
      { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 },
    )
  } catch (error) {
    await rm(staging, { recursive: true, force: true })
    throw brokerError(
      `Could not fetch the Kafka broker jars with Maven (is mvn installed and Maven Central reachable?): ${describeExecError(error)}`,
    )
  }
  if (!(await readdir(staging)).some((file) => file.startsWith('kafka_2.13-'))) {
    throw brokerError(`Maven finished but ${staging} holds no kafka_2.13 jar`)
  }
  await writeFile(join(staging, '.complete'), pom)
  if (await isComplete()) {
    // A concurrent start finished first and may already run a JVM from that folder: keep it.
    await rm(staging, { recursive: true, force: true })
  } else {
    await rm(jarsDir, { recursive: true, force: true })
    await rename(staging, jarsDir)
  }
  log(quiet, `jars ready in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  return jarsDir
}
