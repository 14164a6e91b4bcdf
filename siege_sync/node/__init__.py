"""What every site runs: capture, publishing, the event log, apply and merge, the gRPC
service and the daemon (``siege-node``). README's *Layout* section lists the modules; issue
26 will split them into sub-packages with a face of their own."""
