"""Simulated PBX provider (`type = "simulator"`): realistic traffic on an injectable clock.

    [[providers]]
    name = "sim"
    type = "simulator"
    seed = 7
    arrival_rate_per_min = { support = 1.0, sales = 0.5 }   # or one number for every queue
    answer_probability = 0.9        # simulated agents pick up a Connect ring ...
    answer_delay_s = [2, 8]         # ... after this long (uniform [min, max] or a mean)
    talk_time_s = [30, 240]
    patience_s = 120                # mean caller patience while waiting (exponential)
    hold_probability = 0.2
    transfer_probability = 0.05     # to another queue's number (or transfer_targets)
    outbound_per_agent_per_hour = 2 # spontaneous calls from idle agents (outbound_agents)
    record = true                   # record answered calls; recording_ready.path from recording_files
    recording_files = ["samples/call1.wav"]
    auto_answer = true              # false: only the Answer command answers (browser tests)
    auto_hangup = true              # false: answered calls last until a Hangup command
    customer_numbers = ["+33612345678"]   # callers (plus unknown_caller_ratio unknown numbers)
    busy_numbers = []               # outbound calls to these are busy; no_answer_numbers ring out

Every key is optional; see `options.SimOptions` for all of them and their defaults.
Tests drive it with `inject_call` / `dial_in` (a customer dials a queue number) and
the ordinary commands, on a `ManualClock`.
"""
