// npm run demo — the three scenarios people learn socketpair(2) from, narrated.
//
//   1. one parent and one child talking over a pair
//   2. several children, each with its own pair: no crosstalk
//   3. passing an open file's descriptor to a child, which reads a file it could not open
//
// Uses the low-level, synchronous API: socketpair / sendmsg / recvmsg.
'use strict'
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { socketpair, sendmsg, recvmsg, peerCredentials } = require('..')

const CHILD = path.join(__dirname, 'demo-child.js')

function say(line = '') {
  process.stdout.write(`${line}\n`)
}

/** Starts demo-child.js with `childEnd` as its descriptor 3, then drops our copy of it. */
function startChild(childEnd, role, ...args) {
  const child = spawn(process.execPath, [CHILD, role, ...args], {
    // stdin, stdout, stderr as ours; the socket becomes the child's descriptor 3.
    stdio: ['ignore', 'inherit', 'inherit', childEnd],
  })
  fs.closeSync(childEnd) // the child has its own copy; keeping ours would hide its EOF
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', (code) => (code === 0 ? resolve(child.pid) : reject(new Error(`child exited ${code}`))))
  })
}

async function oneParentOneChild() {
  say('1. One parent, one child, one socketpair')
  say('   ─────────────────────────────────────')
  const [parentEnd, childEnd] = socketpair('stream')
  say(`   socketpair() gave two connected sockets: descriptors ${parentEnd} and ${childEnd}.`)
  say(`   The child gets descriptor ${childEnd} as its descriptor 3; the parent keeps ${parentEnd}.`)
  say(`   Both are close-on-exec, so no other child can inherit them by accident.`)
  const exited = startChild(childEnd, 'greeter')
  sendmsg(parentEnd, 'hello from the parent')
  say(`   parent → child: "hello from the parent"`)
  const reply = recvmsg(parentEnd)
  say(`   child → parent: "${reply.data}"`)
  const who = peerCredentials(parentEnd)
  say(`   peerCredentials(): the other end was created by pid ${who.pid}, uid ${who.uid} (this process made the pair).`)
  fs.closeSync(parentEnd)
  await exited
  say('   The parent closed its end; the child saw end-of-file and exited.')
  say()
}

async function manyChildren() {
  const names = ['ada', 'grace', 'linus']
  say(`2. ${names.length} children, each with a dedicated pair`)
  say('   ──────────────────────────────────────')
  say('   Each child has its own socket, so replies can never get mixed up:')
  say('   no shared pipe, no message routing, no child ids on the wire.')
  const children = names.map((name) => {
    const [parentEnd, childEnd] = socketpair('stream')
    return { name, parentEnd, exited: startChild(childEnd, 'worker', name) }
  })
  children.forEach((c, i) => sendmsg(c.parentEnd, `${(i + 2) * 7}`))
  for (const c of children) {
    const reply = recvmsg(c.parentEnd)
    say(`   pair of ${c.name.padEnd(5)} (descriptor ${c.parentEnd}): ${reply.data}`)
    fs.closeSync(c.parentEnd)
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
  const fd = fs.openSync(file, 'r')
  fs.rmSync(dir, { recursive: true }) // the file now has no name at all
  say(`   The parent opened ${file} (descriptor ${fd}) and then deleted it:`)
  say('   no path leads to it any more, only the open descriptor.')
  const [parentEnd, childEnd] = socketpair('stream')
  const exited = startChild(childEnd, 'reader')
  sendmsg(parentEnd, 'read this for me', [fd])
  say(`   parent → child: "read this for me" + descriptor ${fd} (SCM_RIGHTS)`)
  fs.closeSync(fd)
  say('   The parent closed its descriptor right after sending: the child holds its own.')
  const reply = recvmsg(parentEnd)
  say(`   child → parent: ${reply.data}`)
  fs.closeSync(parentEnd)
  await exited
  say()
}

async function main() {
  say()
  await oneParentOneChild()
  await manyChildren()
  await passAFile()
  say('Done. The tests in __test__/ do all of this with assertions; README.md has the API.')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
