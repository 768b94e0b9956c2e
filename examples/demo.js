// npm run demo — the scenarios people learn socketpair(2) from, narrated.
//
//   1. one parent and one child talking over a dedicated channel
//   2. several children, each with its own channel: no crosstalk
//   3. passing an open file's descriptor to a child, which reads a file it could not open
//   4. the same, one level down: socketpair / sendmsg / recvmsg, synchronous, as in C
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { spawn, socketpair, sendmsg, recvmsg, closeFds } = require('..')

const CHILD = path.join(__dirname, 'demo-child.js')

function say(line = '') {
  process.stdout.write(`${line}\n`)
}

/** spawn() a demo child: it gets its own socketpair, found by Channel.fromParent(). */
function startChild(role, ...args) {
  const { child, channel } = spawn(process.execPath, [CHILD, role, ...args], { stdio: 'inherit' })
  return { child, channel, exited: once(child, 'exit') }
}

/** The next message on `channel`. */
function nextMessage(channel) {
  return new Promise((resolve, reject) => {
    channel.once('message', resolve)
    channel.once('error', reject)
  })
}

async function oneParentOneChild() {
  say('1. One parent, one child, one dedicated channel')
  say('   ────────────────────────────────────────────')
  const { child, channel, exited } = startChild('greeter')
  say(`   spawn() made a socketpair, gave one end to child ${child.pid} as its descriptor 3`)
  say(`   (SOCKETPAIR_FD=3 in its environment), and kept the other: descriptor ${channel.fd}.`)
  say('   Both ends are close-on-exec, so no other child can inherit them by accident.')
  const reply = nextMessage(channel)
  channel.send('hello from the parent')
  say('   parent → child: "hello from the parent"')
  say(`   child → parent: "${(await reply).data}"`)
  const who = channel.peerCredentials()
  say(`   peerCredentials(): the other end was created by pid ${who.pid}, uid ${who.uid} (this process made the pair).`)
  channel.end()
  await exited
  say('   The parent called end(); the child saw "end", exited, and the channel closed.')
  say()
}

async function manyChildren() {
  const names = ['ada', 'grace', 'linus']
  say(`2. ${names.length} children, each with a dedicated channel`)
  say('   ─────────────────────────────────────────')
  say('   Each child has its own socket, so replies can never get mixed up:')
  say('   no shared pipe, no message routing, no child ids on the wire.')
  const children = names.map((name) => ({ name, ...startChild('worker', name) }))
  const replies = children.map((c) => nextMessage(c.channel))
  children.forEach((c, i) => c.channel.send(`${(i + 2) * 7}`))
  for (const [i, c] of children.entries()) {
    say(`   channel of ${c.name.padEnd(5)} (descriptor ${c.channel.fd}): ${(await replies[i]).data}`)
    c.channel.end()
  }
  await Promise.all(children.map((c) => c.exited))
  say()
}

async function passAFile() {
  say('3. Passing an open file to a child')
  say('   ───────────────────────────────')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-demo-'))
  const file = path.join(dir, 'secret.txt')
  fs.writeFileSync(file, 'The parent opened this file; the child never did.\n')
  const handle = await fs.promises.open(file, 'r')
  fs.rmSync(dir, { recursive: true }) // the file now has no name at all
  say(`   The parent opened ${file} (descriptor ${handle.fd}) and then deleted it:`)
  say('   no path leads to it any more, only the open descriptor.')
  const { channel, exited } = startChild('reader')
  const reply = nextMessage(channel)
  channel.send('read this for me', { fds: [handle] })
  say(`   parent → child: "read this for me" + the FileHandle's descriptor (SCM_RIGHTS)`)
  await handle.close()
  say('   The parent closed its FileHandle right after sending: the child holds its own descriptor.')
  say(`   child → parent: ${(await reply).data}`)
  channel.end()
  await exited
  say()
}

function lowLevel() {
  say('4. The same, one level down: socketpair / sendmsg / recvmsg')
  say('   ─────────────────────────────────────────────────────────')
  const [a, b] = socketpair('stream')
  const [r, w] = socketpair()
  sendmsg(a, 'one end of another pair', [w])
  const m = recvmsg(b)
  say(`   sendmsg(${a}, ..., [${w}]) → recvmsg(${b}) = "${m.data}" with descriptor ${m.fds[0]}`)
  sendmsg(m.fds[0], 'written through the received descriptor')
  say(`   recvmsg(${r}) = "${recvmsg(r).data}"`)
  closeFds([a, b, r, w, ...m.fds])
  say('   Synchronous and thin over POSIX; the caller owns and closes every descriptor.')
  say()
}

async function main() {
  say()
  await oneParentOneChild()
  await manyChildren()
  await passAFile()
  lowLevel()
  say('Done. The tests in __test__/ do all of this with assertions; README.md has the API.')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
