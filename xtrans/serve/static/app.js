// The microphone page: getUserMedia -> AudioWorklet (16 kHz s16le) -> websocket /ws, and the
// server's partial and final messages on the page (protocol: xtrans/serve/protocol.py).
'use strict';

const button = document.getElementById('mic');
const statusLine = document.getElementById('status');
const partialLine = document.getElementById('partial');
const finalsList = document.getElementById('finals');
const errorLine = document.getElementById('error');
const hotwordsBox = document.getElementById('hotwords');
const hotwordsScore = document.getElementById('hotwords-score');

let session = null;  // {ws, context, stream, node, stopping}

function setStatus(text) {
  statusLine.textContent = text;
  document.body.dataset.state = text;
}

function showFinal(message) {
  partialLine.textContent = '';
  if (!message.text) return;
  const item = document.createElement('li');
  item.dataset.segment = message.segment;
  item.dataset.start = message.start;
  item.dataset.end = message.end;
  const times = document.createElement('span');
  times.className = 'times';
  times.textContent = `${message.start.toFixed(2)}–${message.end.toFixed(2)} s`;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message.text;
  item.append(times, text);
  finalsList.append(item);
}

// The start message: 16 kHz s16le, and the hotwords box's phrases (one per line) with their boost.
function startMessage() {
  const message = {type: 'start', sample_rate: 16000, format: 's16le'};
  const phrases = hotwordsBox.value.split('\n').map((line) => line.trim()).filter((line) => line);
  if (phrases.length) {
    message.hotwords = phrases;
    const score = Number(hotwordsScore.value);
    if (hotwordsScore.value !== '' && Number.isFinite(score)) message.hotwords_score = score;
  }
  return message;
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.type === 'partial') {
    partialLine.textContent = message.text;
  } else if (message.type === 'final') {
    showFinal(message);
  } else if (message.type === 'error') {
    errorLine.textContent = message.message;
  } else if (message.type === 'done') {
    setStatus('done');
  }
}

async function start() {
  errorLine.textContent = '';
  setStatus('starting');
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  ws.binaryType = 'arraybuffer';
  ws.onmessage = onMessage;
  const current = {ws, context: null, stream: null, node: null, stopping: false};
  session = current;
  ws.onclose = (event) => {
    if (event.code !== 1000 && !errorLine.textContent) {
      errorLine.textContent = `connection closed (${event.code}${event.reason ? ': ' + event.reason : ''})`;
    }
    if (session === current) stopAudio(current);
    if (document.body.dataset.state !== 'done') setStatus('closed');
    button.textContent = 'Start microphone';
    button.classList.remove('recording');
    button.disabled = false;
    if (session === current) session = null;
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('cannot connect to the server'));
  });
  ws.send(JSON.stringify(startMessage()));
  current.stream = await navigator.mediaDevices.getUserMedia({
    audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false},
  });
  current.context = new AudioContext();
  await current.context.audioWorklet.addModule('/static/capture-worklet.js');
  const source = current.context.createMediaStreamSource(current.stream);
  current.node = new AudioWorkletNode(current.context, 'capture-16k', {numberOfOutputs: 1});
  current.node.port.onmessage = (event) => {
    if (event.data === 'flushed') {
      current.ended = true;  // the audio is over: nothing may follow the end message
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({type: 'end'}));
    } else if (ws.readyState === WebSocket.OPEN && !current.ended) {
      ws.send(event.data);
    }
  };
  source.connect(current.node);
  current.node.connect(current.context.destination);  // the node outputs silence
  setStatus('recording');
  button.textContent = 'Stop';
  button.classList.add('recording');
}

function stopAudio(current) {
  if (current.stream) current.stream.getTracks().forEach((track) => track.stop());
  if (current.context) current.context.close();
  current.stream = null;
  current.context = null;
}

function stop() {
  const current = session;
  if (!current || current.stopping) return;
  current.stopping = true;
  setStatus('finishing');
  button.disabled = true;
  if (current.stream) current.stream.getTracks().forEach((track) => track.stop());
  if (current.node) {
    current.node.port.postMessage('flush');  // the worklet sends its last samples, then 'flushed' -> end
  } else if (current.ws.readyState === WebSocket.OPEN) {
    current.ws.send(JSON.stringify({type: 'end'}));
  }
}

button.addEventListener('click', () => {
  if (session) {
    stop();
  } else {
    start().catch((err) => {
      errorLine.textContent = String(err.message || err);
      if (session) { session.ws.close(); stopAudio(session); session = null; }
      setStatus('idle');
    });
  }
});
