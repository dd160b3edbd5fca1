"""The client-training layer every method trains with: a round's lockstep schedule (schedule), the
per-client early-stop loop (local_loop), stacked optimizers (optim), stacked client state (state), the
backbone interface (backbone) and the shared backbones (backbones), and `train_clients` (trainer), the
autograd path beside the backbones' closed-form and native fast paths (fcf_fast; FedEM's in
methods/adapter.py)."""
