// Drives the real tus-js-client (Node build) for the tests: one upload, as an
// application would write it, plus hooks the tests steer from pytest.
//
//   node upload.cjs <node_modules folder> '<JSON options>'
//
// Every HTTP answer, every accepted chunk and the outcome are printed as JSON
// lines on stdout. "hold" options make the client stop before sending a PATCH
// at or past a given offset until a line arrives on stdin, so a test can kill
// the client or the server at a known point instead of racing it.
'use strict'

const fs = require('node:fs')
const http = require('node:http')
const crypto = require('node:crypto')
const path = require('node:path')
const readline = require('node:readline')

const [modules, rawOptions] = process.argv.slice(2)
const opts = JSON.parse(rawOptions)
const tus = require(path.join(modules, 'tus-js-client'))

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`)

// Lines from the test, consumed one per hold.
const lines = []
let wakeUp = null
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  lines.push(line)
  if (wakeUp) wakeUp()
})
const nextLine = () =>
  new Promise((resolve) => {
    const take = () => (lines.length ? resolve(lines.shift()) : (wakeUp = take))
    take()
  })

let held = false
let corrupted = false

function rangeDigest(algorithm, start, end) {
  const fd = fs.openSync(opts.file, 'r')
  try {
    const buf = Buffer.alloc(end - start)
    fs.readSync(fd, buf, 0, buf.length, start)
    return crypto.createHash(algorithm).update(buf).digest('base64')
  } finally {
    fs.closeSync(fd)
  }
}

const options = {
  endpoint: opts.endpoint,
  chunkSize: opts.chunkSize || Number.POSITIVE_INFINITY,
  parallelUploads: opts.parallelUploads || 1,
  protocol: opts.protocol || 'tus-v1',
  metadata: opts.metadata || { filename: path.basename(opts.file) },
  headers: opts.headers || {},
  retryDelays: opts.retryDelays === undefined ? [0, 1000, 3000, 5000] : opts.retryDelays,
  uploadDataDuringCreation: Boolean(opts.uploadDataDuringCreation),
  removeFingerprintOnSuccess: false,
  async onBeforeRequest(req) {
    const offset = Number(req.getHeader('Upload-Offset'))
    const isPatch = req.getMethod() === 'PATCH'
    if (isPatch && opts.holdAt != null && !held && offset >= opts.holdAt) {
      held = true
      emit({ e: 'hold', offset })
      await nextLine()
    }
    if (isPatch && opts.checksum) {
      // A real application computes Upload-Checksum of the body it sends;
      // with a fixed chunkSize the body is [offset, offset + chunkSize).
      const size = fs.statSync(opts.file).size
      const end = Math.min(offset + options.chunkSize, size)
      let digest = rangeDigest(opts.checksum, offset, end)
      if (opts.corruptChecksumAt != null && !corrupted && offset >= opts.corruptChecksumAt) {
        corrupted = true
        digest = rangeDigest(opts.checksum, offset, end - 1) // wrong on purpose, once
        emit({ e: 'corrupted', offset })
      }
      req.setHeader('Upload-Checksum', `${opts.checksum} ${digest}`)
    }
  },
  onAfterResponse(req, res) {
    emit({
      e: 'response',
      method: req.getMethod(),
      url: req.getURL(),
      status: res.getStatus(),
      offset: res.getHeader('Upload-Offset') ?? null,
    })
  },
  onShouldRetry(err, attempt, retryOptions) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0
    // 460: the checksum did not match and the server dropped those bytes;
    // sending the same range again (with a correct checksum) is the cure.
    if (status === 460) return true
    return !(status >= 400 && status < 500) || status === 409 || status === 423
  },
  onChunkComplete(size, accepted, total) {
    emit({ e: 'chunk', size, accepted, total })
  },
  onSuccess() {
    emit({ e: 'success', url: upload.url })
    process.exit(0)
  },
  onError(err) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : null
    emit({ e: 'error', message: String(err.message || err), status })
    process.exit(1)
  },
}
if (opts.urlStorage) {
  options.urlStorage = new tus.FileUrlStorage(opts.urlStorage)
}
if (opts.keepAlive === false) {
  // One connection per request, so a round-robin balancer spreads them.
  options.httpStack = new tus.DefaultHttpStack({ agent: new http.Agent({ keepAlive: false }) })
}

const upload = new tus.Upload(fs.createReadStream(opts.file), options)

async function main() {
  if (opts.urlStorage) {
    const previous = await upload.findPreviousUploads()
    emit({ e: 'previous', count: previous.length })
    if (previous.length) upload.resumeFromPreviousUpload(previous[0])
  }
  upload.start()
}

main().catch((err) => {
  emit({ e: 'error', message: String(err), status: null })
  process.exit(1)
})
