// The k-entity dashboard page: plain browser JavaScript, no build step. It polls api/status,
// keeps a ring of samples for the charts (uPlot, served by the handler from node_modules) and
// drives the dead-letter API. All URLs are relative, so the page works under any mount path.
/* global uPlot */
;(() => {
  const HEADER = { 'content-type': 'application/json', 'x-k-entity-dashboard': '1' }
  const $ = (id) => document.getElementById(id)
  const numberFormat = new Intl.NumberFormat()

  const state = {
    config: { refreshMs: 2000, historyMinutes: 10, readOnly: false, delivered: false, database: '' },
    samples: [],
    previous: undefined,
    deadLetters: -1,
    charts: {},
  }

  async function api(path, init) {
    const response = await fetch(path, init)
    const body = await response.json().catch(() => ({}))
    if (!response.ok) {
      const message = body?.error?.message ?? `${response.status} ${response.statusText}`
      throw new Error(message)
    }
    return body
  }

  function formatAge(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`
    if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`
    if (ms < 7_200_000) return `${(ms / 60_000).toFixed(1)} min`
    return `${(ms / 3_600_000).toFixed(1)} h`
  }

  function cell(row, text, className) {
    const td = document.createElement('td')
    td.textContent = text
    if (className) td.className = className
    row.append(td)
    return td
  }

  function fillTable(tbody, rows, emptyText, columns) {
    tbody.replaceChildren()
    if (rows.length === 0) {
      const tr = document.createElement('tr')
      const td = cell(tr, emptyText, 'note')
      td.colSpan = columns
      tbody.append(tr)
      return
    }
    for (const row of rows) tbody.append(row)
  }

  function chart(id, series) {
    const element = $(id)
    const options = {
      width: Math.max(300, element.clientWidth),
      height: 200,
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, dash: s.dash }))],
      axes: [{}, { size: 60 }],
      legend: { live: false },
    }
    const data = [[], ...series.map(() => [])]
    return new uPlot(options, data, element)
  }

  function makeCharts() {
    state.charts.backlog = chart('chart-backlog', [
      { label: 'pending', color: '#1f6feb' },
      // Dashed: with no retries, ready equals pending and would hide it.
      { label: 'ready', color: '#2c8a4b', dash: [6, 4] },
      { label: 'retrying', color: '#d97706' },
    ])
    state.charts.throughput = chart(
      'chart-throughput',
      state.config.delivered
        ? [
            { label: 'sent/s', color: '#2c8a4b' },
            { label: 'produced/s', color: '#1f6feb' },
          ]
        : [{ label: 'net drain/s', color: '#2c8a4b' }],
    )
    state.charts.lag = chart('chart-lag', [{ label: 'lag (s)', color: '#b3261e' }])
    window.addEventListener('resize', () => {
      for (const [name, instance] of Object.entries(state.charts)) {
        instance.setSize({ width: Math.max(300, $(`chart-${name}`).clientWidth), height: 200 })
      }
    })
  }

  /**
   * Throughput is derived from two successive samples. Without a delivered counter only the
   * backlog's net change is known: pending going down by N in T seconds is N/T drained (sent minus
   * produced). With one, sent/s is its increase and produced/s is sent/s plus the backlog's growth.
   */
  function addSample(status) {
    const t = Date.parse(status.at) / 1000
    const previous = state.previous
    if (previous !== undefined && t <= previous.t) return false
    const sample = {
      t,
      pending: status.pending,
      ready: status.ready,
      retrying: status.retrying,
      lag: status.oldestPendingMs / 1000,
      delivered: status.delivered,
      sent: null,
      produced: null,
      drain: null,
    }
    if (previous !== undefined) {
      const seconds = t - previous.t
      const growth = status.pending - previous.pending
      sample.drain = -growth / seconds
      if (typeof status.delivered === 'number' && typeof previous.delivered === 'number') {
        const sent = Math.max(0, status.delivered - previous.delivered)
        sample.sent = sent / seconds
        sample.produced = Math.max(0, (sent + growth) / seconds)
      }
    }
    state.previous = sample
    state.samples.push(sample)
    const keep = Math.ceil((state.config.historyMinutes * 60_000) / state.config.refreshMs)
    if (state.samples.length > keep) state.samples.splice(0, state.samples.length - keep)
    return true
  }

  function drawCharts() {
    const s = state.samples
    const x = s.map((p) => p.t)
    state.charts.backlog.setData([
      x,
      s.map((p) => p.pending),
      s.map((p) => p.ready),
      s.map((p) => p.retrying),
    ])
    state.charts.throughput.setData(
      state.config.delivered
        ? [x, s.map((p) => p.sent), s.map((p) => p.produced)]
        : [x, s.map((p) => p.drain)],
    )
    state.charts.lag.setData([x, s.map((p) => p.lag)])
  }

  function showFigures(status) {
    const approx = status.exact ? '' : '≈ '
    $('pending').textContent = approx + numberFormat.format(status.pending)
    $('ready').textContent = approx + numberFormat.format(status.ready)
    $('retrying').textContent = numberFormat.format(status.retrying)
    $('dead').textContent = numberFormat.format(status.deadLetters)
    $('lag').textContent = formatAge(status.oldestPendingMs)
    const last = state.samples.at(-1)
    const rate = state.config.delivered ? last?.sent : last?.drain
    $('throughput').textContent = rate === null || rate === undefined ? '–' : `${rate.toFixed(1)}/s`
    $('updated').textContent = `at ${new Date(status.at).toLocaleTimeString()}`

    const topics = status.topics.map((topic) => {
      const tr = document.createElement('tr')
      cell(tr, topic.topic)
      cell(tr, numberFormat.format(topic.pending), 'num')
      cell(tr, numberFormat.format(topic.ready), 'num')
      cell(tr, numberFormat.format(topic.retrying), 'num')
      cell(tr, numberFormat.format(topic.deadLetters), 'num')
      cell(tr, formatAge(topic.oldestPendingMs), 'num')
      return tr
    })
    fillTable($('topics').tBodies[0], topics, 'No messages waiting and no dead letters.', 6)

    const relays = status.relays.map((relay) => {
      const tr = document.createElement('tr')
      cell(tr, relay.name)
      cell(tr, relay.mode)
      cell(tr, relay.role)
      cell(tr, relay.client ?? '')
      cell(tr, relay.since ? new Date(relay.since).toLocaleString() : '')
      return tr
    })
    fillTable(
      $('relays').tBodies[0],
      relays,
      'No relay session visible (none running, or the database cannot show other sessions).',
      5,
    )

    const select = $('dead-topic')
    const known = new Set([...select.options].map((o) => o.value))
    for (const topic of status.topics) {
      if (topic.deadLetters > 0 && !known.has(topic.topic)) select.add(new Option(topic.topic, topic.topic))
    }
  }

  async function poll() {
    try {
      const status = await api('api/status')
      if (addSample(status)) drawCharts()
      showFigures(status)
      $('connection').textContent = 'live'
      $('connection').className = 'state live'
      $('connection').title = ''
      if (status.deadLetters !== state.deadLetters) {
        state.deadLetters = status.deadLetters
        await loadDeadLetters()
      }
    } catch (error) {
      $('connection').textContent = 'status read failed'
      $('connection').className = 'state failing'
      $('connection').title = error.message
      $('updated').textContent = error.message
    } finally {
      setTimeout(poll, state.config.refreshMs)
    }
  }

  function preview(bytes) {
    if (bytes === null) return '(null)'
    const text = bytes.encoding === 'base64' ? `base64:${bytes.preview}` : bytes.preview
    return bytes.truncated ? `${text}… (${numberFormat.format(bytes.bytes)} B)` : text
  }

  function selectedIds() {
    return [...document.querySelectorAll('#dead-letters tbody input[type=checkbox]:checked')].map(
      (box) => box.dataset.id,
    )
  }

  function updateSelection() {
    const none = selectedIds().length === 0
    $('replay-selected').disabled = none
    $('purge-selected').disabled = none
  }

  // Loads can overlap (a poll sees the count change while a replay reloads): only the answer to
  // the latest request is shown, so an older, slower one never brings back rows already gone.
  let loads = 0

  async function loadDeadLetters() {
    const topic = $('dead-topic').value
    const query = new URLSearchParams({ limit: '100' })
    if (topic !== '') query.set('topic', topic)
    const load = ++loads
    try {
      const { total, deadLetters } = await api(`api/dead-letters?${query}`)
      if (load !== loads) return
      $('dead-total').textContent =
        `(${numberFormat.format(total)}${total > deadLetters.length ? `, ${deadLetters.length} shown` : ''})`
      const rows = deadLetters.map((letter) => {
        const tr = document.createElement('tr')
        tr.dataset.id = letter.id
        const box = document.createElement('input')
        box.type = 'checkbox'
        box.dataset.id = letter.id
        box.setAttribute('aria-label', `select dead letter ${letter.id}`)
        box.addEventListener('change', updateSelection)
        cell(tr, '').append(box)
        cell(tr, letter.id, 'num')
        cell(tr, letter.topic)
        cell(tr, preview(letter.key), 'preview')
        cell(tr, preview(letter.value), 'preview')
        cell(tr, String(letter.attempts), 'num')
        cell(tr, letter.errors.at(-1)?.error ?? '', 'error')
        cell(tr, new Date(letter.deadAt).toLocaleString())
        const actions = cell(tr, '', 'actions')
        const replay = document.createElement('button')
        replay.type = 'button'
        replay.textContent = 'Replay'
        replay.className = 'mutation replay'
        replay.addEventListener('click', () => act('replay', [letter.id]))
        const purge = document.createElement('button')
        purge.type = 'button'
        purge.textContent = 'Purge'
        purge.className = 'mutation danger purge'
        purge.addEventListener('click', () => act('purge', [letter.id]))
        actions.append(replay, ' ', purge)
        return tr
      })
      fillTable($('dead-letters').tBodies[0], rows, 'No dead letters.', 9)
      $('select-all').checked = false
      updateSelection()
    } catch (error) {
      if (load === loads) $('dead-message').textContent = `Could not read the dead letters: ${error.message}`
    }
  }

  function confirmAction(text) {
    const dialog = $('confirm')
    $('confirm-text').textContent = text
    dialog.returnValue = ''
    dialog.showModal()
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true })
    })
  }

  async function act(action, ids) {
    const count = ids.length === 1 ? `dead letter ${ids[0]}` : `${ids.length} dead letters`
    const question =
      action === 'replay'
        ? `Replay ${count}? Each goes back into the outbox as a new message, at the end of its key's queue.`
        : `Purge ${count}? They are deleted for good.`
    if (!(await confirmAction(question))) return
    let message
    try {
      const result = await api(`api/dead-letters/${action}`, {
        method: 'POST',
        headers: HEADER,
        body: JSON.stringify({ ids }),
      })
      const done = action === 'replay' ? `Replayed ${result.replayed}` : `Purged ${result.purged}`
      message = `${done} of ${ids.length} dead letter(s).`
    } catch (error) {
      message = `${action} failed: ${error.message}`
    }
    await loadDeadLetters()
    // Said after the table is reloaded, so what the message says is what the table shows.
    $('dead-message').textContent = message
  }

  async function start() {
    try {
      state.config = await api('api/config')
    } catch (error) {
      $('connection').textContent = `cannot read the configuration: ${error.message}`
      $('connection').className = 'state failing'
    }
    $('database').textContent = state.config.database
    if (state.config.readOnly) document.body.classList.add('read-only')
    if (!state.config.delivered) {
      $('throughput-label').textContent = 'Net drain'
      $('throughput-caption').textContent = 'Net drain (messages/s)'
      $('throughput-note').textContent =
        "Derived from the backlog: how fast pending goes down (sent minus produced); negative while it grows. The app can pass the dashboard a 'delivered' counter to chart sent and produced separately."
    } else {
      $('throughput-label').textContent = 'Sent'
      $('throughput-note').textContent =
        "Sent/s from this process's relays' delivered counter; produced/s is sent/s plus the backlog's growth."
    }
    makeCharts()
    $('dead-refresh').addEventListener('click', loadDeadLetters)
    $('dead-topic').addEventListener('change', loadDeadLetters)
    $('select-all').addEventListener('change', (event) => {
      for (const box of document.querySelectorAll('#dead-letters tbody input[type=checkbox]')) {
        box.checked = event.target.checked
      }
      updateSelection()
    })
    $('replay-selected').addEventListener('click', () => act('replay', selectedIds()))
    $('purge-selected').addEventListener('click', () => act('purge', selectedIds()))
    window.kEntityDashboard = state
    // Not left to the first status read: the dead letters are worth showing (or their error)
    // even when the status cannot be read.
    loadDeadLetters()
    await poll()
  }

  start()
})()
