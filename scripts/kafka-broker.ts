// A real Apache Kafka broker (KRaft) for tests and demos, run from Maven Central jars because no
// Docker image or OS package is available here: a single node (startKafkaBroker) or a cluster of
// brokers beside a controller (startKafkaCluster). The parts live in scripts/kafka/.
// CLI: node scripts/kafka-broker.ts start|stop|status|run.
import { cli } from './kafka/cli.ts'
import { errorMessage } from './kafka/common.ts'

export { type KafkaBroker, type KafkaBrokerOptions, startKafkaBroker } from './kafka/broker.ts'
export {
  type KafkaCluster,
  type KafkaClusterNode,
  type KafkaClusterOptions,
  startKafkaCluster,
} from './kafka/cluster.ts'
export { KAFKA_VERSION } from './kafka/common.ts'
export type { ProxiedListenerOptions, SaslSslListenerOptions } from './kafka/config.ts'

if (import.meta.main) {
  cli(process.argv[2]).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(errorMessage(error))
      process.exit(1)
    },
  )
}
