/**
 * Across process boundaries: a Node child gets one end of a pair at stdio[3], receives
 * data and an open file's descriptor, reads the file through it and sends a descriptor
 * back. Several children each get their own pair, with no crosstalk.
 */
import test from 'ava'
import fs from 'node:fs'

import { recvmsg, sendmsg, socketpair } from '..'
import { leakChecked, closeAll, fixture, identity, readThrough, run, tempFile } from './helpers'

const leakFree = leakChecked(test)

leakFree('a child reads a file through a descriptor passed over its pair, and passes one back', async (t) => {
  const [mine, theirs] = socketpair()
  const file = tempFile('the secret is 42')
  const proc = run(process.execPath, [fixture('child-reader.js'), String(mine), identity(mine)], {
    stdio: ['ignore', 'inherit', 'pipe', theirs],
  })
  fs.closeSync(theirs) // the child has its copy now

  sendmsg(mine, 'please read this', [file.fd])
  const reply = recvmsg(mine)
  t.truthy(reply, `child replied (stderr: ${proc.stderr()})`)
  const report = JSON.parse(reply!.data.toString())
  t.is(report.text, 'please read this')
  t.deepEqual(report.contents, ['the secret is 42'])
  t.false(report.parentEndInherited, "the parent's end is close-on-exec, the child never saw it")
  t.is(report.pid, proc.child.pid)

  t.is(reply!.fds.length, 1)
  t.is(readThrough(reply!.fds[0]!), `written by child ${proc.child.pid}`)

  t.is(await proc.exited, 0, proc.stderr())
  t.is(recvmsg(mine), null, 'EOF once the child is gone')
  closeAll([mine, file.fd, ...reply!.fds])
})

leakFree('four children, each with its own pair: no crosstalk', async (t) => {
  const children = [0, 1, 2, 3].map((id) => {
    const [mine, theirs] = socketpair(process.platform === 'darwin' ? 'dgram' : 'seqpacket')
    const proc = run(process.execPath, [fixture('child-echo.js'), `child${id}`], {
      stdio: ['ignore', 'inherit', 'pipe', theirs],
    })
    fs.closeSync(theirs)
    return { id, mine, proc }
  })
  for (let round = 0; round < 25; round++) {
    for (const c of children) sendmsg(c.mine, `round ${round} for ${c.id}`)
    for (const c of children) {
      const m = recvmsg(c.mine)
      t.is(m?.data.toString(), `child${c.id}:round ${round} for ${c.id}`)
    }
  }
  for (const c of children) fs.closeSync(c.mine)
  t.deepEqual(await Promise.all(children.map((c) => c.proc.exited)), [0, 0, 0, 0])
})
