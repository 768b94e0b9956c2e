// The children of demo.js. Each picks up its own channel to the parent.
'use strict'
const fs = require('node:fs')
const { Channel, closeFds } = require('..')

const [role, name] = process.argv.slice(2)
const parent = Channel.fromParent()

parent.on('message', (request) => {
  if (role === 'greeter') {
    parent.send(`hello back from child ${process.pid} (it received: ${request.data})`)
  } else if (role === 'worker') {
    const n = Number(request.data.toString())
    parent.send(`${name} (pid ${process.pid}) was asked for ${n}² and answers ${n * n}`)
  } else if (role === 'reader') {
    const [fd] = request.fds
    const text = fs.readFileSync(fd, 'utf8').trim()
    parent.send(`child ${process.pid} got descriptor ${fd} and read: "${text}"`)
  }
  closeFds(request.fds)
})
// When the parent ends, the channel ends ours too and closes; with nothing left to do,
// the process exits by itself.
