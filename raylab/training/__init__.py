"""The training loop, without Ray: one trial from a resolved config (`loop`), what a checkpoint
holds and how RNG and carried state are restored (`checkpoint`), the copy of a trial's reports kept
in each checkpoint (`reports`), the process reset between trials
in a reused worker (`process_state`), why a trial ended (`ending`), and which way each metric improves (`metrics`). It may import
`spec`, `cells`, `tasks` and `networks`. GPU machines without Ray run it from the working tree.
"""
