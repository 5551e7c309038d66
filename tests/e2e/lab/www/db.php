<?php
// Lab: opens a mysqli connection to the lab MariaDB and holds it ?hold=N seconds (0..30).
// On failure it answers like WordPress does: a 500 page "Error establishing a database connection".
mysqli_report(MYSQLI_REPORT_OFF);
$hold = max(0, min(30, (int)($_GET['hold'] ?? 0)));
$sock = $_SERVER['LAB_MYSQL_SOCKET'] ?? '';
$db = mysqli_connect('localhost', 'lab', 'lab', '', 0, $sock);
if (!$db) {
    http_response_code(500);
    header('Content-Type: text/plain');
    echo "Error establishing a database connection\n";
    exit;
}
mysqli_query($db, 'SELECT 1');
sleep($hold);
mysqli_close($db);
header('Content-Type: text/plain');
echo "db ok\n";
