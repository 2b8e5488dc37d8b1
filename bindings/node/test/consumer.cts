// The CommonJS side of the type check: `require` gets the same types.
import blipmq = require('blipmq')

export async function example(addr: string): Promise<void> {
  const client: blipmq.Client = await blipmq.connect(addr)
  const error: blipmq.BlipMQError = new blipmq.AuthError('x', { code: 200 })
  console.log(error.code)
  await client.close()
}
