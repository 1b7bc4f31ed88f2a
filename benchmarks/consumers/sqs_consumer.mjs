// sqs-consumer (bbc/sqs-consumer) with the AWS SDK v3 SQS client, as the comparison runs it
// (bench/compare.py copies this file next to its node_modules, .cache/compare/node).
//
//   node sqs_consumer.mjs ENDPOINT QUEUE_URL HANDLER_MS
//
// Default options plus batchSize: 10. handleMessage is a no-op, or awaits a 50 ms setTimeout
// (HANDLER_MS), and returns the message: sqs-consumer then deletes it (DeleteMessage, one per
// message). Records like bench/handlers.py: every MessageId handled, and the first message's
// [monotonic seconds, process CPU seconds]; process.hrtime is CLOCK_MONOTONIC on Linux, the
// clock of Python's time.monotonic(). Written to $BENCH_RECORD on SIGTERM.
import { writeFileSync } from "node:fs";
import { SQSClient } from "@aws-sdk/client-sqs";
import { Consumer } from "sqs-consumer";

const [endpoint, queueUrl, handlerMs] = process.argv.slice(2);
const pause = Number(handlerMs || 0);
const seen = [];
const first = [];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const app = Consumer.create({
  queueUrl,
  batchSize: 10,
  sqs: new SQSClient({
    endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
  }),
  handleMessage: async (message) => {
    if (first.length === 0) {
      const cpu = process.cpuUsage();
      first.push(Number(process.hrtime.bigint()) / 1e9, (cpu.user + cpu.system) / 1e6);
    }
    if (pause) {
      await sleep(pause);
    }
    seen.push(message.MessageId);
    return message;
  },
});
app.on("error", (err) => console.error(`error: ${err.message}`));
app.on("processing_error", (err) => console.error(`processing_error: ${err.message}`));

process.on("SIGTERM", () => {
  app.stop();
  if (process.env.BENCH_RECORD) {
    writeFileSync(process.env.BENCH_RECORD, JSON.stringify({ seen, first }));
  }
  process.exit(0);
});
app.start();
