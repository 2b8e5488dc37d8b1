// The error classes both packages export from @blipmq/core: one per wire
// code of the protocol's error table.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'

import { sdk } from './sdk.mjs'

const { BlipMQError } = sdk

test('BlipMQError can be constructed and subclassed by users', () => {
  const error = new BlipMQError('boom', { code: 500, codeName: 'Internal', cause: 'x' })
  assert.equal(error.name, 'BlipMQError')
  assert.equal(error.code, 500)
  assert.equal(error.cause, 'x')
})

test('every wire code has its own class, named as in every SDK (schema/errors.toml)', () => {
  // Copied beside the package's own tests by the test script.
  const table = JSON.parse(readFileSync(new URL('../error-classes.json', import.meta.url), 'utf8'))
  assert.ok(table.codes.length > 20)
  for (const { code, name, class: stem } of table.codes) {
    const Class = sdk[`${stem}Error`]
    assert.equal(typeof Class, 'function', `${stem}Error is exported`)
    assert.equal(sdk.errorClass(code), Class)
    const error = sdk.codedError(code, name, 'the detail')
    assert.ok(error instanceof Class && error instanceof BlipMQError && error instanceof Error)
    assert.equal(error.name, `${stem}Error`)
    assert.equal(error.code, code)
    assert.equal(error.codeName, name)
    assert.equal(error.message, `${name} (${code}): the detail`)
    // Without a name (as a native error may come): the table's.
    assert.equal(sdk.codedError(code, undefined, 'the detail').codeName, name)
  }
  // A code a newer broker might send: UnknownError, keeping the number.
  const future = sdk.codedError(406, 'Unknown', 'new')
  assert.ok(future instanceof sdk.UnknownError)
  assert.equal(future.code, 406)
})
