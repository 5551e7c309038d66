<?php
// Lab: sleeps ?s=N seconds (0..60). Before sleeping it records its worker pid in the lab's state
// dir so the harness can signal exactly the worker that holds this request.
$s = max(0, min(60, (int)($_GET['s'] ?? 1)));
$state = $_SERVER['LAB_STATE'] ?? '';
if ($state !== '') {
    @file_put_contents($state . '/busy.pid.tmp', (string)getmypid());
    @rename($state . '/busy.pid.tmp', $state . '/busy.pid');
}
sleep($s);
header('Content-Type: text/plain');
echo "slept $s\n";
