// A chat room over BlipMQ, in the browser: every page subscribes to
// `chat.<room>` and publishes what its user types there, with the author's
// name as a header. Options come from the page's query string:
//   ?broker=ws://127.0.0.1:7879&room=lobby&name=alice&key=<api key>
import { connect } from './blipmq-web/index.js'

const params = new URLSearchParams(location.search)
const broker = params.get('broker') ?? 'ws://127.0.0.1:7879'
const room = params.get('room') ?? 'lobby'
const name = params.get('name') ?? `guest-${Math.floor(Math.random() * 1000)}`
const apiKey = params.get('key') ?? undefined
const topic = `chat.${room}`

const $ = (id) => document.getElementById(id)
$('room').textContent = room
$('name').textContent = name

function setStatus(state, text) {
  $('status').dataset.state = state
  $('status').textContent = text
}

function show(message) {
  const item = document.createElement('li')
  const from = message.headers.get('from') ?? 'someone'
  if (from === name) item.className = 'mine'
  const time = document.createElement('time')
  time.textContent = new Date(message.timestampMs).toLocaleTimeString()
  const author = document.createElement('b')
  author.textContent = from
  item.append(time, author, `: ${message.text()}`)
  $('messages').append(item)
}

try {
  const client = await connect(broker, { apiKey, name: `chat page ${name}` })
  const messages = await client.subscribe(topic)
  setStatus('connected', 'connected')
  $('send').disabled = false
  $('compose').addEventListener('submit', async (event) => {
    event.preventDefault()
    const text = $('text').value
    $('text').value = ''
    await client.publish(topic, text, { headers: { from: name } })
  })
  addEventListener('pagehide', () => client.close())
  for await (const message of messages) show(message)
  setStatus('error', 'disconnected')
} catch (error) {
  // BlipMQError: the wire code and its name, e.g. "600 ConnectFailed".
  setStatus('error', `error ${error.code ?? ''} ${error.name}: ${error.message}`)
}
