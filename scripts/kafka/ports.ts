// The launcher lives in src/dev/kafka (shipped for `k-entity kafka`); tests import it from here.
export * from '../../src/dev/kafka/ports.ts'
