// Drives a Colyseus server the way benches/edge.rs drives Playtree: N clients join rooms
// of 50 (10 joins at a time), then each sends one chat line every P ms (phases spread
// evenly over the period); every line reaches the 50 members of its room. After a
// warm-up it measures: deliveries/s counted at the clients, the server's CPU seconds
// (from /proc/<pid>/stat) per delivered message, its RSS (from /proc/<pid>/status), and
// send → receipt latency of every delivery.
import { Client } from "@colyseus/sdk";
import { readFileSync } from "node:fs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, word, i, all) => {
    if (word.startsWith("--")) pairs.push([word.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const url = args.url ?? "ws://127.0.0.1:2567";
const pid = Number(args["server-pid"]);
const clients = Number(args.clients ?? 2000);
const periodMs = Number(args["period-ms"] ?? 1000);
const seconds = Number(args.seconds ?? 10);
const warmupSeconds = Number(args["warmup-seconds"] ?? 3);
const ROOM_SIZE = 50;

const ticksPerSecond = 100; // USER_HZ on Linux
function cpuSeconds() {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}
function rssBytes() {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
  return kib * 1024;
}
const mib = (bytes) => (bytes / 1048576).toFixed(1);
const nowUs = () => Math.round(performance.now() * 1000);

const rssBefore = rssBytes();
const started = performance.now();
const rooms = [];
for (let i = 0; i < clients; i += 10) {
  const batch = [];
  for (let j = i; j < Math.min(i + 10, clients); j++) {
    batch.push(new Client(url).joinOrCreate("chat"));
  }
  rooms.push(...(await Promise.all(batch)));
}
const roomIds = new Set(rooms.map((room) => room.roomId));
const rssJoined = rssBytes();
console.error(
  `${rooms.length} clients joined ${roomIds.size} rooms in ${((performance.now() - started) / 1000).toFixed(1)} s; server RSS ${mib(rssBefore)} MiB before, ${mib(rssJoined)} MiB after`,
);

let measuring = false;
let deliveries = 0;
const latencies = [];
for (const room of rooms) {
  room.onMessage("chat", (message) => {
    if (!measuring) return;
    const sent = Number(message.text);
    latencies.push(nowUs() - sent);
    deliveries++;
  });
}
const epoch = performance.now();
const stopAt = epoch + (warmupSeconds + seconds) * 1000;
rooms.forEach((room, index) => {
  const phase = (periodMs * index) / rooms.length;
  setTimeout(() => {
    const timer = setInterval(() => {
      if (performance.now() >= stopAt) return clearInterval(timer);
      room.send("chat", String(nowUs()));
    }, periodMs);
  }, phase);
});
await new Promise((resolve) => setTimeout(resolve, warmupSeconds * 1000));
measuring = true;
const cpuStart = cpuSeconds();
const measureStart = performance.now();
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
const cpu = cpuSeconds() - cpuStart;
const elapsed = (performance.now() - measureStart) / 1000;
measuring = false;
const delivered = deliveries;
const rssLoaded = rssBytes();
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] / 1000 : NaN);
const offered = (clients * ROOM_SIZE * 1000) / periodMs;
console.log(
  `colyseus: ${clients} clients in ${roomIds.size} rooms, one line per client every ${periodMs} ms (offered ${offered.toFixed(0)} deliveries/s)`,
);
console.log(
  `  delivered ${(delivered / elapsed).toFixed(0)}/s; server CPU ${cpu.toFixed(2)} s in ${elapsed.toFixed(1)} s = ${((cpu / elapsed) * 100).toFixed(1)}% of a core, ${((cpu * 1e6) / Math.max(delivered, 1)).toFixed(2)} µs per delivered message`,
);
console.log(
  `  latency ms: p50 ${pct(0.5).toFixed(2)}  p99 ${pct(0.99).toFixed(2)}  max ${(latencies.at(-1) / 1000).toFixed(2)}  (${latencies.length} samples)`,
);
console.log(
  `  server RSS: ${mib(rssBefore)} MiB idle, ${mib(rssJoined)} MiB with clients joined (${((rssJoined - rssBefore) / 1024 / clients).toFixed(1)} KiB per connection), ${mib(rssLoaded)} MiB under load`,
);
process.exit(0);
