"""What belongs to this program rather than to the component library: config, rendering."""
