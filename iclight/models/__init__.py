"""The torch modules and how they compute: the conditioned UNet, its graphs and compiled code, LoRAs, attention."""
