// The documented Uppy setup: Dashboard + the Tus plugin, pointed at our
// server's tus endpoint (given in the query string). The outcome is put on
// <body> for the test to read.
const { Uppy, Dashboard, Tus } = window.Uppy
const params = new URLSearchParams(window.location.search)

const uppy = new Uppy({ autoProceed: false })
  .use(Dashboard, { inline: true, target: '#dashboard' })
  .use(Tus, { endpoint: params.get('endpoint'), chunkSize: 1024 * 1024, retryDelays: [0, 1000] })

uppy.on('complete', (result) => {
  document.body.dataset.result = JSON.stringify({
    successful: result.successful.map((f) => ({ name: f.name, url: f.uploadURL })),
    failed: result.failed.map((f) => ({ name: f.name, error: String(f.error) })),
  })
})
document.body.dataset.ready = 'true'
