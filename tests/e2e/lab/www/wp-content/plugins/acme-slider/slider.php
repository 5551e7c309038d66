<?php
// acme-slider: a file made for the lab (not a real plugin); calls a function that does not exist.
acme_slider_missing_function();
