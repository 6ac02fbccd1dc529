// AudioWorklet processor: the microphone at the AudioContext's rate -> 16 kHz mono s16le.
//
// A streaming windowed-sinc resampler for any ratio: output sample n lies at input time
// t = n * R (R = sampleRate / 16000) and is y[n] = sum_j x[j] h(j - t), with
// h(u) = 2 fc sinc(2 fc u) w(u / W), a low-pass below both Nyquist frequencies
// (fc = 0.45 / R cycles per input sample when downsampling), K = 16 zero crossings on each side
// (W = K / (2 fc) input samples) and a Blackman window w. Output n is computed once input
// t + W has arrived. The samples go to the page as Int16Array messages of about 100 ms.
const TARGET_RATE = 16000;
const ZERO_CROSSINGS = 16;
const ROLLOFF = 0.9;
const MESSAGE_SAMPLES = 1600;

class Capture16k extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / TARGET_RATE;  // input samples per output sample
    this.fc = 0.5 * ROLLOFF * Math.min(1, 1 / this.ratio);  // cycles per input sample
    this.halfWidth = Math.ceil(ZERO_CROSSINGS / (2 * this.fc));
    this.buffer = new Float32Array(0);  // inputs from index this.base on
    this.base = 0;
    this.received = 0;  // inputs so far
    this.next = 0;  // the next output index
    this.out = new Int16Array(MESSAGE_SAMPLES);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === 'flush') { this.flush(); }
    };
  }

  kernel(u) {
    const z = 2 * this.fc * u;  // in zero crossings
    if (Math.abs(z) >= ZERO_CROSSINGS) return 0;
    const sinc = z === 0 ? 1 : Math.sin(Math.PI * z) / (Math.PI * z);
    const r = (u / this.halfWidth + 1) / 2;  // 0..1 across the window
    const w = 0.42 - 0.5 * Math.cos(2 * Math.PI * r) + 0.08 * Math.cos(4 * Math.PI * r);
    return 2 * this.fc * sinc * w;
  }

  push(sample) {
    const v = Math.max(-32768, Math.min(32767, Math.round(sample * 32768)));
    this.out[this.filled++] = v;
    if (this.filled === MESSAGE_SAMPLES) this.send();
  }

  send() {
    if (this.filled === 0) return;
    const message = this.out.slice(0, this.filled);
    this.port.postMessage(message.buffer, [message.buffer]);
    this.filled = 0;
  }

  // outputs whose inputs (up to t + W) have all arrived; at the end (final) every output
  // up to the last input, the signal being zero after its end
  emit(final) {
    const total = final ? Math.ceil(this.received / this.ratio) : Infinity;
    for (;;) {
      if (this.next >= total) break;
      const t = this.next * this.ratio;
      if (!final && t + this.halfWidth >= this.received) break;
      if (this.ratio === 1) {
        this.push(this.buffer[this.next - this.base]);
      } else {
        const first = Math.max(0, Math.ceil(t - this.halfWidth));
        const last = Math.min(this.received - 1, Math.floor(t + this.halfWidth));
        let y = 0;
        for (let j = first; j <= last; j++) y += this.buffer[j - this.base] * this.kernel(j - t);
        this.push(y);
      }
      this.next++;
    }
    // drop inputs no later output reads
    const keepFrom = Math.max(this.base, Math.floor(this.next * this.ratio - this.halfWidth) - 1);
    if (keepFrom > this.base) {
      this.buffer = this.buffer.slice(keepFrom - this.base);
      this.base = keepFrom;
    }
  }

  flush() {
    this.emit(true);
    this.send();
    this.flushed = true;  // no samples after the last message
    this.port.postMessage('flushed');
  }

  process(inputs) {
    if (this.flushed) return false;
    const input = inputs[0];
    if (input && input.length > 0) {
      const n = input[0].length;
      const mono = new Float32Array(n);
      for (const channel of input) for (let i = 0; i < n; i++) mono[i] += channel[i] / input.length;
      const joined = new Float32Array(this.buffer.length + n);
      joined.set(this.buffer);
      joined.set(mono, this.buffer.length);
      this.buffer = joined;
      this.received += n;
      this.emit(false);
    }
    return true;
  }
}

registerProcessor('capture-16k', Capture16k);
