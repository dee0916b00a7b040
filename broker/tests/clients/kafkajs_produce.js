// Produces the records `check.py` expects, through kafkajs, with one compression codec.
// kafkajs ships gzip only; snappy, lz4 and zstd come from pure-JS/WASM codec packages
// registered the way kafkajs documents (CompressionCodecs[type] = factory).
//
// usage: node kafkajs_produce.js <bootstrap> <topic> <codec> <count> <t0_ms> <partitions>
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require("kafkajs");
const lz4 = require("lz4js");
const zstd = require("@bokuweb/zstd-wasm");

CompressionCodecs[CompressionTypes.Snappy] = require("kafkajs-snappy");
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  compress: async (encoder) => Buffer.from(lz4.compress(encoder.buffer)),
  decompress: async (buffer) => Buffer.from(lz4.decompress(buffer)),
});
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  compress: async (encoder) => Buffer.from(zstd.compress(encoder.buffer, 3)),
  decompress: async (buffer) => Buffer.from(zstd.decompress(buffer)),
});

const CODECS = {
  none: CompressionTypes.None,
  gzip: CompressionTypes.GZIP,
  snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4,
  zstd: CompressionTypes.ZSTD,
};

async function main() {
  const [bootstrap, topic, codec, countArg, t0Arg, partitionsArg] = process.argv.slice(2);
  const count = Number(countArg);
  const t0 = Number(t0Arg);
  await zstd.init();
  const kafka = new Kafka({ clientId: "sluice-check", brokers: [bootstrap], logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: Number(partitionsArg) }],
    waitForLeaders: true,
  });
  if (!created) throw new Error(`createTopics(${topic}) reported the topic already existed`);
  await admin.disconnect();

  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const chunk = 1000;
  for (let start = 0; start < count; start += chunk) {
    const messages = [];
    for (let i = start; i < Math.min(count, start + chunk); i++) {
      messages.push({
        key: keyOf(i),
        value: valueOf("kafkajs", codec, i),
        headers: { seq: String(i), client: "kafkajs" },
        timestamp: String(t0 + i),
      });
    }
    await producer.send({ topic, acks: -1, compression: CODECS[codec], messages });
  }
  await producer.disconnect();
}

// Must match check.py's key_of / value_of.
function keyOf(i) {
  return `key-${i % 997}`;
}
function valueOf(client, codec, i) {
  return `${client}|${codec}|${i}|` + "x".repeat(i % 61);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
