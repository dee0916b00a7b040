// One consumer-group member for groups.py, through kafkajs (same contract as
// group_worker.py): every batch is appended as "partition offset" lines to <dir>/<name>.out,
// then its offsets are committed synchronously; the assignment is kept in <dir>/<name>.status.
// SIGTERM disconnects cleanly (LeaveGroup).
//
// usage: node group_worker.js <bootstrap> <topic> <group> <name> <dir> <session_ms>
const fs = require("fs");
const path = require("path");
const { Kafka, logLevel } = require("kafkajs");

async function main() {
  const [bootstrap, topic, group, name, dir, sessionArg] = process.argv.slice(2);
  const out = fs.openSync(path.join(dir, `${name}.out`), "a");
  const statusPath = path.join(dir, `${name}.status`);
  const st = { assigned: [], events: [], seen: 0, commit_failures: 0 };
  const writeStatus = () => {
    fs.writeFileSync(statusPath + ".tmp", JSON.stringify({ ...st, t: Date.now() / 1000 }));
    fs.renameSync(statusPath + ".tmp", statusPath);
  };
  writeStatus();

  const kafka = new Kafka({ clientId: name, brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({
    groupId: group,
    sessionTimeout: Number(sessionArg),
    heartbeatInterval: 500,
    metadataMaxAge: 2000,
  });
  const { GROUP_JOIN, HEARTBEAT } = consumer.events;
  consumer.on(GROUP_JOIN, (e) => {
    const parts = (e.payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b);
    st.events.push(["assign", parts]);
    st.assigned = parts;
    writeStatus();
  });
  consumer.on(HEARTBEAT, () => writeStatus());

  let stopping = false;
  process.on("SIGTERM", async () => {
    if (stopping) return;
    stopping = true;
    await consumer.disconnect();
    st.assigned = [];
    writeStatus();
    process.exit(0);
  });

  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    // The batch's last offset is resolved when eachBatch returns (the fetch position).
    eachBatchAutoResolve: true,
    eachBatch: async ({ batch }) => {
      if (batch.messages.length === 0) return;
      const lines = batch.messages.map((m) => `${batch.partition} ${m.offset}\n`).join("");
      fs.writeSync(out, lines);
      st.seen += batch.messages.length;
      const last = batch.messages[batch.messages.length - 1].offset;
      const next = (BigInt(last) + 1n).toString();
      for (let i = 0; i < 20; i++) {
        try {
          await consumer.commitOffsets([{ topic, partition: batch.partition, offset: next }]);
          break;
        } catch (e) {
          st.commit_failures += 1;
          if (!e.retriable) {
            console.error(`${name}: commit failed: ${e.message}`);
            break;
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      writeStatus();
    },
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
