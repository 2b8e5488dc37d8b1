// Node 20 has no global WebSocket; the `ws` package's stands in for it in
// these tests, as a user on Node 20 would do (or pass `{ WebSocket }`).
import { WebSocket } from 'ws'

globalThis.WebSocket ??= WebSocket
