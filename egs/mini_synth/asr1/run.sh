#!/usr/bin/env bash
# The embedded demo: synthetic speech (eSpeak NG voices), no download and no pretrained weights.
# A small streamable encoder is trained from scratch through all five stages on a CPU.
#   ./run.sh                       all 12 stages
#   ./run.sh --stage 6 --stop_stage 10 --ngpu 1
#   ./run.sh --debug true          a few utterances and updates per stage, to test the setup
# Options: ./run.sh --help (they are those of asr.sh).
#
# Recipe notes (measured on the 2-core CPU, 1 thread per run, greedy test WER on held-out voices):
#   - Stage 4 fits the random CNN to 80 log-mel filters (conf/pretrain_frontend.yaml, ~2 min) and
#     every training stage keeps it frozen: a CNN trained from scratch with the transducer was
#     still 0.98 after 365 updates, the fitted and frozen one 0.55 after 411 and trains 2x faster.
#   - extractor_mode batch_norm: conv 1 normalised per channel with fixed statistics at inference,
#     so streaming carries no state for it.
#   - Any microphone level: waveform_norm cumulative (sample n divided by the running mean/variance of
#     samples 0..n: a gain divides out, the energy contour stays; 3 numbers of state per stream) and
#     gain perturbation [-35, 10] dB in every stage. Study at 1000 stage-1 updates, greedy test WER at
#     -30/-20/-10/0/+6 dB: 26.1% at every gain; the same gain perturbation without the normalisation
#     86.6/74.2/66.2/65.3/66.6%; the previous recipe (neither) 99/63/23/9.7/12% at 2500 updates.
#     A per-channel running level on conv 1 (cumulative_norm) fitted its CNN 3.5x slower per update.
#   - pos_conv causal with a 32-frame kernel in every stage: without any positional convolution
#     the same model was at 0.74 after 716 updates; with it 0.28 after 602 and 0.20 after 968.
#     The preset's 128-frame kernel: 0.34 after 773 (slower per update); depthwise: 0.37 after 689.
#   - 6000 training utterances: with 3000 and the same 2500 stage-1 updates the stage-1 test WER was
#     13.45% (dev loss 1.45); with 6000 it is 9.66% (dev loss 0.81), for 40 s more synthesis.
#   - Noise at 20-40 dB SNR (local/data.sh): with 5-40 dB a log-mel model stayed far behind.
#   - 3000 stage-1 updates (with the level-invariant front end): test WER 7.35% beam / 9.24% greedy,
#     dev loss 0.68; with 2500 10.08% / 9.45% (dev loss 0.79). Whole demo measured: 22.1 min.
#     After the #11/#13 refactor (same settings): stage 1 7.98% beam / 8.61% greedy, stage 5a 13.24%
#     beam in real streaming (ONNX fp32 the same, int8 13.66%); timed under load, so no new total.
#   - Multi-condition training in every stage (data.augment in conf/train_stage*.yaml): simulated rooms
#     (p 0.3), generated noise of five families at 0..30 dB or babble of 1-4 training talkers at 5..30 dB
#     (p 0.6), a microphone EQ, telephone line or codec (p 0.3), then the gain. Held-out noise families
#     (sweeps, crackle), rooms from other seeds and test-set babble measure it in stage 12. Stage 1,
#     beam 4, WER clean / noise 20 / 10 / 0 dB / babble 10 dB / RT60 0.6 s / telephone:
#       3000 updates, clean-only training (before):  7.98 / -    / -    / -    / -    / -    / -
#       3000 updates, multi-condition:              11.13 / 14.71 / 27.94 / 64.29 / 31.30 / 20.80 / 18.28
#       4500 updates, multi-condition:               7.98 /  9.45 / 24.58 / 59.24 / 26.89 / 19.96 / 11.55
#     The 80-update streaming stages after it keep the same pipeline. Feature masking
#     (model.encoder.mask_*) is off here: untested on this from-scratch model within the budget.
#   - The 15-minute budget (make demo on a fresh clone, alone; RESULTS.md's "Wall time" table has each
#     stage's time). The 4500 stage-1 updates above take 25+ minutes alone, the whole demo 35+. Stage 1
#     learns per utterance heard, not per update: dev loss after 1 / 2 / 3 epochs of the 6000 utterances,
#     30 s batches at lr 1e-3: 12.0 / 6.3 / 3.7; 15 s at 2e-3: 7.5 / 3.7 / 2.6; 15 s at 4e-3: 7.7 / 6.4 /
#     5.9 (end of its schedule); 7.5 s at 2e-3 ended 2 epochs at 3.92 where 15 s ended 2.5 at 3.17 in less
#     time. What fits is about 2.5 epochs (1500 updates of 15 s, ~5 min), and there the units decided it.
#     Test WER, beam 4, clean / noise 10 dB, after 1500 updates of 15 s at lr 2e-3 (pruned loss):
#       4 layers, bpe 128 (a token per word, 3.5 per utterance): 41.0 / 55.0
#       3 layers, bpe 128:                                        39.5 / 52.5
#       2 layers, bpe 128:                                        35.7 / 49.6
#       2 layers, bpe 40:                                         18.9 / 40.6
#       3 layers, bpe 40:                                         18.5 / 42.4
#       3 layers, bpe 30 (letters and a few pairs):               16.2 / 37.2   <- this demo
#     With word tokens every word is learnt on its own; letters share what they sound like. The CNN fit
#     matters as much: 300 updates of 15 s (dev MSE 0.36, 47 s) instead of 400 of 30 s (0.29, 110 s)
#     left stage 1 at 27.3%. So: bpe 30, 3 layers, 15 s batches at lr 2e-3, 1100 updates. This is a
#     tour of the pipeline, not its best model: for that, run stage 1 longer (training.max_updates in
#     conf/train_stage1.yaml; with 4 layers and word tokens 4500 updates of 30 s at lr 1e-3 gave 7.98%;
#     the settings here were better at 1500, longer runs of them are not measured) and all the streaming
#     variants (--train_stages "1 2a 2b 2c 2d 3a 3b 3c 4 5a 5b"; the demo trains the chain to 5a).
#   - Two training processes of one thread (--train_nproc 2, 7.5 s each per update) instead of one of two:
#     1100 stage-1 updates 231 s against 301 s (the same data; dev loss 3.46 against 3.54); over the
#     first 300 updates alone 0.168 against 0.193 s per update (bench/train_procs.py: the gap grows as the
#     model starts emitting, e.g. 0.23 -> 0.30 s per update in one process). The time it freed went to
#     stage 1: 1500 updates in 321 s, test WER 23.1% (27.5% at 1100; dev loss 2.12 against 3.54), stage 5a
#     23.3% (31.9%), the demo 13.4 min from a fresh clone. Tried at 1100 updates, no better: warmup 50
#     (30.7%, dev loss 3.87), lr 3e-3 (31.7%, 3.48), 60% commands in the training texts (28.8%; commands
#     53% wrong instead of 83%, digits 24% instead of 15%). On the training set itself the 1100-update
#     model made 25.7% errors against 27.7% on test: it is short of updates, not of voices.
#   - Augmentation beside the update (data.num_workers 1 per training process): 300 stage-1 updates took 96 s with
#     one worker, 144 s with none (augmenting inside the update) and 109 s with two (the same dev loss, 11.5546, in
#     all three: the draws do not depend on where they are made); without the pipeline 82 s. A CNN of 32 channels
#     instead of 64 (model.encoder.conv_channels) is 3-4x cheaper alone, but fitted 0.459 dev MSE in stage 4 (60 s,
#     against 0.279 in 94 s), and stage 1 from it took 275 s for 1500 updates (285-295 s with 64) at test WER
#     27.9% (dev loss 2.84): 10-20 s saved for 9 points, so the CNN keeps 64 channels.
#   - What the multi-condition training costs here (stage 1, 1500 updates, the same data and CNN): clean
#     speech alone reaches 11.1% test WER (beam; commands 22.5% wrong, digits 8.5%) against 23.1% (70.8%,
#     12.1%) with the pipeline, and its updates are 25% cheaper; its model fails in noise (10 dB 68%). The
#     noise that bought least was the quietest: generated noise at 0..30 dB and babble at 5..30 dB instead of
#     -5..25 and 0..25 gave, with training seeds 1 and 2, 18.70 / 19.54% against 23.11 / 20.38% (dev loss
#     1.94 / 1.96 against 2.12 / 2.13), the same held-out 10 dB WER (greedy 42.23 / 43.49 against 42.44 /
#     43.49) and better babble and rooms; the demo trains so since. A clean first epoch (from_epoch: 1 on
#     every entry: 18.07%, but 10 dB 46.6% and telephone 35.7%) trades the hard conditions for clean
#     speech instead (docs/robustness.md). The seed alone moves stage 1 by about 3 points. From a fresh
#     clone with these ranges: stage 1 18.28% (285 s), stage 5a 20.17%, the demo 12.2 min.
#     Half the probabilities (rooms 0.15, noise or babble 0.4, channel 0.15: 43% of utterances clean
#     instead of 20%): stage 1 16.81% beam (commands 46% wrong instead of 70%; dev loss 1.61 against 1.94),
#     and greedy clean / 20 dB / 10 dB / 0 dB / babble 10 / RT60 0.6 / telephone 17.2 / 21.9 / 44.5 / 76.3 /
#     40.6 / 38.9 / 32.8% against 21.2 / 26.5 / 42.2 / 76.3 / 40.1 / 34.0 / 31.1%: clean speech and mild noise
#     gain, loud noise, rooms and lines lose; the ratios the robustness table is judged by get worse, so the
#     probabilities stay.
#   - Twice the stage-1 updates (3000 instead of 1500, the same conf otherwise; the same data and fitted
#     CNN; alone: 465 s for the 3000 updates, where the demo's 1500 took 242 s in the same session). Stage 1,
#     beam 4, WER clean / held-out noise 20 / 10 / 0 dB / babble 10 dB / RT60 0.6 s / telephone (dev loss):
#       1500 updates (the demo):                     17.86 / 25.21 / 40.13 / 73.11 / 35.71 / 34.24 / 25.84 (1.85)
#       3000 updates:                                 9.24 / 11.55 / 30.25 / 68.07 / 25.63 / 25.42 / 13.24 (0.75)
#       3000 updates, stronger mix (rooms p 0.5, noise p 0.8 at -5..25 dB, babble 0..25 dB, channel p 0.4):
#                                                    14.08 / 17.86 / 32.77 / 67.44 / 31.72 / 25.42 / 20.17 (1.32)
#     More training lowers every condition, clean most: the clean WER nearly reaches the 7.98% of the longer
#     4-layer model, 20 dB comes within 3 points of clean, and the ratios to clean grow (10 dB 2.2x -> 3.3x,
#     the room 1.9x -> 2.8x); a stronger mix costs clean speech and buys no condition. The 3000 updates
#     alone would take the demo past 15 minutes on a slower run of this machine. A sorted first epoch
#     (SortaGrad: batches from the shortest utterances to the longest) ended 1500 updates at dev loss 2.48
#     against 1.85 (test 19.75% against 17.86%): not kept. CTC weight 0.5 or 2.0 instead of 1.0 (1500 updates):
#     test 19.33 / 19.54% against 17.86%, held-out noise at 10 dB 40.34 / 42.65% against 40.13%: 1.0 stays.
#   - Decode-time context (stage 12, issue 22): the 45 command phrases of the corpus (data/phrases.txt)
#     as hotword lists and a 5-gram letter LM of the training text. On the 1100-update models, test set,
#     10 dB held-out noise, stage 5a: a 10-phrase list holding each command's phrase at a per-token
#     boost of 0.4 / 0.7 / 1.0 / 1.5 took the commands' WER 105.6% -> 97.8 / 93.3 / 83.2 / 74.2%,
#     while 10-phrase lists without it moved the whole clean set 31.9% -> 32.4 / 31.7 / 32.4 / 36.1%
#     (+7.6 points at 10 dB for 1.5): a boost per letter adds up over a word, so the demo used 1.0 (until the rules below).
#     The LM did not help on dev at any scale (0.1 / 0.2 / 0.3: 29.2 / 30.7 / 33.0% against 27.9%
#     without): the corpus is 70% random digit strings, and the errors are acoustic. With today's models
#     (fresh clone, stage 5a 20.2%): right list 88.8 -> 55.1% (-38%), distractors +2.3 points at 10 dB and
#     +3.4 clean, the LM (0.05, a tie on dev) -0.4 / -0.2. Word-level boosts (given when a word completes)
#     and 8- or 12-gram LMs were tried too (docs/decoding.md; the closing note of issue 22). Since the
#     search without hotwords runs inside the search with them and a complete phrase keeps at most two
#     boosts per word (docs/decoding.md), the same model at 2.0 per letter: right list -42% (51.7%),
#     distractors -0.2 at 10 dB and +2.3 clean; so the demo boosts 2.0 per letter.
#     How much one boost's numbers move between two sets of 150 utterances (a later stage-5a model, 22.48%
#     on test; per-token boost 1.0 / 1.5 / 2.0 / 2.5 or 3.0; right list on the noisy commands, distractors
#     at 10 dB and clean):
#       test: -22% / -0.84 / -0.42;  -40% / -0.42 / -0.42;  -42% / -0.84 / +1.05;  (3.0) -42% / +3.57 / +5.04
#       dev:  -29% / +0.85 / +0.63;  -32% / +4.23 / +2.96;  -39% / +5.07 / +5.07;  (2.5) -44% / +7.40 / +6.34
#     and the 3000-update stage-1 model above (9.24% clean) at 1.5 / 2.0: -44% / +1.68 / +1.05 and -51% /
#     +2.31 / +1.05. A distractor's cost is a handful of commands turned into a listed sibling (TURN LEFT ->
#     GO LEFT, VOLUME UP -> GO UP, GOOD NIGHT -> GO RIGHT) and moves by 3-5 points from set to set; no
#     boost keeps it within 0.5 on both sets while taking right lists 30% lower, so the demo keeps 2.0
#     rather than the boost that happens to pass on test. On the same test set the lists' draw alone
#     (context_table --seed 12345 / 1 / 2 / 3; the noise is drawn anew too) gave that model at 2.0: right list
#     -42 / -42 / -53 / -48%, distractors at 10 dB -0.84 / +1.68 / 0.00 / +1.68 and clean +1.05 / +2.94 /
#     +3.57 / +2.10: the clean cost is about 2.4 points, and one draw's reading is good to about a point;
#     so stage 12 pools three draws of lists per utterance (context_table --draws 3, ~15 s more). Pooled, the
#     sets still disagree: at 1.5 test -39% / -0.35 / +0.14, dev -32% / +3.45 / +2.47; at 1.0 test -27% /
#     -0.42 / -0.35, dev -30% / +1.27 / +0.85 (right list / distractors 10 dB / clean). No boost passes on
#     dev, so none is chosen for passing on test: the demo keeps 2.0.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
# One torch thread per process for synthesis, formatting and decoding (they run --nj 2 processes), and
# for training, which runs 2 processes (--train_nproc 2: gloo DDP, each with half of the update's batch
# and its augmentation in a DataLoader worker beside it); stage 4's CNN fit, one process, takes 2 threads.
# The 1100 stage-1 updates took 231 s in 2 processes of 1 thread (7.5 s each per update, dev loss 3.46)
# against 301 s in 1 process of 2 threads (15 s per update, dev loss 3.54): this model's operations are
# too small for two threads to share them well (bench/train_procs.py). Set OMP_NUM_THREADS to override
# the rest.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

./asr.sh \
  --local_data_opts "--num_train 6000 --num_dev 150 --num_test 150" \
  --bpe_size 30 \
  --frontend_config conf/pretrain_frontend.yaml \
  --text_normalizer upper \
  --test_sets test \
  --train_stages "1 2b 3a 5a" \
  --train_threads 1 \
  --train_nproc 2 \
  --level_opts "--search greedy" \
  --robustness_opts "--search greedy" \
  --robustness_snrs 20,10,0 \
  --robustness_babble_snrs 10 \
  --robustness_rt60s 0.6 \
  --lm_order 5 \
  --context_phrases data/phrases.txt \
  --context_opts "--hotwords_score 2.0 --lm_scales 0.05,0.1,0.2 --draws 3" \
  "$@"
