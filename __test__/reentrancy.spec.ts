/**
 * Every listener re-entering the channel: inside 'message', 'end', 'drain', 'error' and
 * 'close', a listener closes, ends, sends, throws or removes itself. Whatever it does,
 * the process does not crash, each channel emits 'close' exactly once and last, messages
 * are never delivered twice or out of order, and every descriptor is delivered or closed
 * (the count of open descriptors is back where it was).
 */
import test from 'ava'
import { once } from 'node:events'

import { Channel, type Message } from '..'
import { catchingUncaught, closeAll, closing, leakChecked, tempFile } from './helpers'

const leakFree = leakChecked(test)

type Action = 'close' | 'end' | 'send' | 'throw' | 'remove'
type Event = 'message' | 'end' | 'drain' | 'error' | 'close'

const ACTIONS: Action[] = ['close', 'end', 'send', 'throw', 'remove']
const EVENTS: Event[] = ['message', 'end', 'drain', 'error', 'close']


function act(channel: Channel, action: Action, listener: (...args: never[]) => void, event: Event): void {
  switch (action) {
    case 'close':
      channel.close()
      break
    case 'end':
      channel.end()
      break
    case 'send':
      try {
        channel.send('from a listener')
      } catch (err) {
        // Sending from 'close', 'error' or after end() throws a coded error: fine.
        if (typeof (err as { code?: unknown }).code !== 'string') throw err
      }
      break
    case 'throw':
      throw new Error(`thrown from '${event}'`)
    case 'remove':
      channel.off(event as 'end', listener as () => void)
      break
  }
}

/**
 * Makes `target` emit `event` with a listener doing `action`, then winds everything down.
 * Returns what `target` emitted, in order.
 */
async function scenario(event: Event, action: Action): Promise<{ seen: string[]; received: string[] }> {
  const [a, b] = Channel.pair()
  const target = event === 'message' || event === 'end' ? b : a
  const seen: string[] = []
  const received: string[] = []
  const file = tempFile('payload')
  b.on('message', (m: Message) => {
    received.push(m.data.toString())
    closeAll(m.fds)
  })
  a.on('message', (m: Message) => closeAll(m.fds))
  for (const ch of [a, b]) ch.on('error', () => {})
  let fired = false
  const listener = (): void => {
    if (fired) return
    fired = true
    act(target, action, listener, event)
  }
  // Registered before the listener under test: a listener that throws keeps the ones
  // after it from running, as EventEmitter does.
  const closed = Promise.all([closing(a), closing(b)])
  for (const name of EVENTS) (target as unknown as { on(e: string, l: () => void): void }).on(name, () => seen.push(name))
  target.on(event as 'end', listener)
  switch (event) {
    case 'message':
      for (let i = 0; i < 5; i++) a.send(`m${i}`, { fds: [file.fd] })
      a.end()
      break
    case 'end':
      a.send('before end', { fds: [file.fd] })
      a.end()
      break
    case 'drain': {
      b.pause()
      const drained = once(a, 'drain').catch(() => undefined) // before the listener under test
      a.off('drain', listener)
      a.on('drain', listener)
      let i = 0
      while (a.send(Buffer.alloc(256 * 1024, `c${i++}:`), { fds: [file.fd] })) {
        // until the queue is full
      }
      b.resume()
      await drained
      a.end()
      break
    }
    case 'error':
      b.close()
      await closing(b)
      a.send('to nobody')
      break
    case 'close':
      a.close()
      break
  }
  // Wind down whatever is still open, a little later.
  await new Promise((resolve) => setTimeout(resolve, 20))
  b.end()
  setTimeout(() => {
    a.close()
    b.close()
  }, 200)
  await closed
  closeAll([file.fd])
  return { seen, received }
}

for (const event of EVENTS) {
  for (const action of ACTIONS) {
    leakFree(`a '${event}' listener that calls ${action === 'remove' ? 'off() on itself' : action === 'throw' ? 'throw' : `${action}()`}: 'close' once and last, nothing twice, nothing leaked`, async (t) => {
      const { seen, received } = await catchingUncaught(async (uncaught) => {
        const r = await scenario(event, action)
        await new Promise((resolve) => setImmediate(resolve))
        if (action === 'throw') t.is(uncaught.length, 1, 'the thrown error reached uncaughtException once')
        else t.deepEqual(uncaught, [])
        return r
      })
      t.is(seen.filter((e) => e === 'close').length, 1, seen.join(','))
      t.is(seen[seen.length - 1], 'close', seen.join(','))
      t.is(seen.filter((e) => e === 'end').length <= 1, true)
      t.is(new Set(received).size, received.length, `no message twice: ${received.join(',')}`)
      const order = received.filter((r) => /^m\d$/.test(r)).map((r) => Number(r.slice(1)))
      t.deepEqual(
        order,
        [...order].sort((x, y) => x - y),
        'in order',
      )
      if (event === 'message' && action !== 'close') {
        t.deepEqual(order, [0, 1, 2, 3, 4], 'every message, even after a throw or the listener leaving')
      }
    })
  }
}

leakFree('an iterator started after the channel closed, or after the peer ended, finishes at once', async (t) => {
  const [a, b] = Channel.pair({ allowHalfOpen: true })
  b.on('message', () => {})
  const ended = once(b, 'end')
  a.end()
  await ended
  const afterEnd: Message[] = []
  for await (const m of b) afterEnd.push(m)
  t.deepEqual(afterEnd, [])
  b.close()
  await closing(b)
  const afterClose: Message[] = []
  for await (const m of b) afterClose.push(m)
  t.deepEqual(afterClose, [])
  a.close()
  await closing(a)
})
