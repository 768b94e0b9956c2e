// The children of demo.js. Each finds its end of the socketpair at descriptor 3.
'use strict'
const fs = require('node:fs')
const { sendmsg, recvmsg } = require('..')

const SOCKET = 3
const [role, name] = process.argv.slice(2)

const request = recvmsg(SOCKET)
if (role === 'greeter') {
  sendmsg(SOCKET, `hello back from child ${process.pid} (it received: ${request.data})`)
} else if (role === 'worker') {
  const n = Number(request.data.toString())
  sendmsg(SOCKET, `${name} (pid ${process.pid}) was asked for ${n}² and answers ${n * n}`)
} else if (role === 'reader') {
  const [fd] = request.fds
  const text = fs.readFileSync(fd, 'utf8').trim()
  fs.closeSync(fd)
  sendmsg(SOCKET, `child ${process.pid} got descriptor ${fd} and read: "${text}"`)
}
// Wait for the parent to close its end, then exit.
while (recvmsg(SOCKET) !== null);
