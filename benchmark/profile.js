// npm run bench:profile — memory and scale.
//
//   Memory: peak RSS of the sending and the receiving process for 64 B and 1 MiB
//   messages on a stream Channel, at two message counts ten times apart: if memory
//   grew with the count, the larger run would show it.
//   Scale: total messages/s with 1, 4, 16 and 64 children, each on its own channel.
//
// Writes benchmark/results/profile.json and prints a table.
'use strict'
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { spawn } = require('..')
const { fill } = require('./common')

const DRIVER = path.join(__dirname, 'driver.js')
const PEER = path.join(__dirname, 'peer.js')

function drive(size, count) {
  const out = execFileSync(process.execPath, [DRIVER, 'channel', 'oneway', String(size), String(count)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return JSON.parse(out.trim().split('\n').pop())
}

async function fanout(children, total) {
  const each = Math.floor(total / children)
  const peers = Array.from({ length: children }, () =>
    spawn(process.execPath, [PEER, 'channel', 'recv', '64', String(each)], { stdio: ['ignore', 'pipe', 'inherit'] }),
  )
  const lines = peers.map(
    ({ child }) =>
      new Promise((resolve) => {
        let text = ''
        child.stdout.on('data', (d) => {
          text += d
          const parts = text.split('\n').filter(Boolean)
          if (parts.length >= 2) resolve(JSON.parse(parts[1]))
        })
      }),
  )
  // Wait until every child has said "ready".
  await Promise.all(
    peers.map(
      ({ child }) =>
        new Promise((resolve) => {
          const onData = (d) => {
            if (String(d).startsWith('ready')) {
              child.stdout.off('data', onData)
              resolve()
            }
          }
          child.stdout.on('data', onData)
        }),
    ),
  )
  const buf = Buffer.alloc(64)
  const start = process.hrtime.bigint()
  await Promise.all(
    peers.map(async ({ channel }) => {
      for (let seq = 0; seq < each; seq++) {
        if (!channel.send(fill(buf, seq))) await new Promise((r) => channel.once('drain', r))
      }
    }),
  )
  const results = await Promise.all(lines)
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  for (const p of peers) p.channel.close()
  await Promise.all(peers.map(({ child }) => new Promise((r) => (child.exitCode === null ? child.once('exit', r) : r()))))
  return { children, total: each * children, seconds, rate: (each * children) / seconds, ok: results.every((r) => r.ok && r.count === each) }
}

async function main() {
  const memory = []
  for (const [size, counts] of [
    [64, [100_000, 1_000_000, 3_000_000]],
    [1024 * 1024, [100, 1000]],
  ]) {
    for (const count of counts) {
      const r = drive(size, count)
      memory.push({ size, count, ok: r.ok, seconds: r.seconds, senderMaxRssMiB: r.senderMaxRssKiB / 1024, receiverMaxRssMiB: r.receiverMaxRssKiB / 1024 })
      process.stderr.write(`  memory ${size} B x ${count}: sender ${(r.senderMaxRssKiB / 1024).toFixed(0)} MiB, receiver ${(r.receiverMaxRssKiB / 1024).toFixed(0)} MiB${r.ok ? '' : ' FAIL'}\n`)
    }
  }
  const scale = []
  for (const children of [1, 4, 16, 64]) {
    const r = await fanout(children, 640_000)
    scale.push(r)
    process.stderr.write(`  scale ${children} children: ${(r.rate / 1000).toFixed(0)}k msg/s in total${r.ok ? '' : ' FAIL'}\n`)
  }
  process.stdout.write('\n| messages | count | sender peak RSS | receiver peak RSS | verified |\n|---|---|---|---|---|\n')
  for (const m of memory) {
    process.stdout.write(`| ${m.size === 64 ? '64 B' : '1 MiB'} | ${m.count.toLocaleString('en')} | ${m.senderMaxRssMiB.toFixed(0)} MiB | ${m.receiverMaxRssMiB.toFixed(0)} MiB | ${m.ok ? 'ok' : 'FAIL'} |\n`)
  }
  process.stdout.write('\n| children | messages in total | msg/s in total | verified |\n|---|---|---|---|\n')
  for (const s of scale) {
    process.stdout.write(`| ${s.children} | ${s.total.toLocaleString('en')} | ${(s.rate / 1000).toFixed(0)}k | ${s.ok ? 'ok' : 'FAIL'} |\n`)
  }
  const dir = path.join(__dirname, 'results')
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, 'profile.json'), JSON.stringify({ date: new Date().toISOString(), memory, scale }, null, 2))
  const ok = memory.every((m) => m.ok) && scale.every((s) => s.ok)
  process.stdout.write(`\n${ok ? 'every case verified' : 'SOME CASES FAILED'}; JSON in benchmark/results/profile.json\n`)
  process.exitCode = ok ? 0 : 1
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
