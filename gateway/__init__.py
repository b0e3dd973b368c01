"""The gateway: the only public endpoint; runs every turn through the model services, owns Redis."""
