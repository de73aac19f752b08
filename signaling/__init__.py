"""Sluice signaling: the embedded XMPP server, Jingle, the focus, and the web front door with the browser
client's files (webclient/). Talks to bridges only in Colibri2 (the colibri2 package); never imports
bridge."""
